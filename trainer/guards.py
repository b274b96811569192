"""Stop at the first NaN/Inf loss with a diagnosis, instead of training on NaN for hours."""
from __future__ import annotations

import math

import tensorflow as tf

from trainer.errors import NonFiniteLoss


class StopOnNonFiniteLoss(tf.keras.callbacks.Callback):
    """Runs on every rank. The first rank that sees a non-finite loss raises; its process exits
    with the diagnosis and horovodrun then ends the other ranks (their next allreduce cannot
    complete), so no rank trains on NaN. Record ids of the batch are not tracked by the input
    pipeline, so the diagnosis names the step, not the records."""

    def __init__(self, steps_per_epoch: int, rank: int):
        super().__init__()
        self.steps_per_epoch, self.rank = steps_per_epoch, rank
        self.last_good = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        step = self.epoch * self.steps_per_epoch + batch + 1
        if math.isfinite(float(loss)):
            self.last_good = (step, float(loss))
            return
        good = (f"last finite loss {self.last_good[1]:.4f} at step {self.last_good[0]}"
                if self.last_good else "no finite loss before it")
        raise NonFiniteLoss(
            f"loss became {float(loss)} on rank {self.rank} at epoch {self.epoch + 1} step {batch + 1} "
            f"(global step {step}), learning rate {self._lr():.6g}; {good}. Lower --lr, "
            "lengthen --warmup-epochs, or check the input data; stopped")

    def _lr(self) -> float:
        opt = self.model.optimizer
        lr = opt.learning_rate
        return float(lr(opt.iterations) if callable(lr) else tf.keras.backend.get_value(lr))
