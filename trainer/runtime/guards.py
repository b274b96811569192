"""Stop a diverging run with a diagnosis instead of training on NaN for hours: a NaN/Inf batch
loss (float16 steps skipped by dynamic loss scaling are not a divergence), and at each epoch end
a non-finite training or validation loss, or a training loss grown past --divergence-factor
times the first epoch's (a loss of 6e21 is finite but no better)."""
from __future__ import annotations

import math

import tensorflow as tf

from trainer.errors import Diverged, NonFiniteLoss
from trainer.keras import keras

MAX_IDS_SHOWN = 16


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Runs on every rank. The first rank that sees a non-finite loss raises; its process exits
    with the diagnosis and horovodrun then ends the other ranks (their next allreduce cannot
    complete), so no rank trains on NaN. The input order is a function of (seed, epoch), so
    `batch_ids(epoch, batch)` can name the records of the bad batch after the fact."""

    def __init__(self, position, rank: int, batch_ids=None, loss_scale=None, growth: float = 10.0):
        super().__init__()
        self.position, self.rank, self.batch_ids = position, rank, batch_ids
        self.loss_scale = loss_scale        # mixed_float16: () -> the dynamic loss scale
        self.growth = growth                # 0: no bound on the loss's growth
        self.last_good = None
        self.scale_before = None
        self.first_epoch_loss = None

    def on_epoch_end(self, epoch, logs=None):
        """Epoch losses are averaged over ranks (MetricAverageCallback runs before this one), so
        every rank takes the same decision and all stop together: no rank waits in an allreduce."""
        logs = logs or {}
        for key in ("loss", "val_loss"):
            skipped = key == "loss" and self._skipping_overflows()    # float16: a skipped step's inf
            if key in logs and not math.isfinite(float(logs[key])) and not skipped:
                raise Diverged(f"{key} became {float(logs[key])} at the end of epoch {epoch + 1} "
                               f"(learning rate {self._lr():.6g}); lower --lr or lengthen --warmup-epochs",
                               self.rank, everywhere=True)
        loss = logs.get("loss")
        if loss is None:
            return
        if self.first_epoch_loss is None:
            self.first_epoch_loss = float(loss)
        elif self.growth and float(loss) > self.growth * self.first_epoch_loss:
            raise Diverged(f"training loss {float(loss):.4g} at the end of epoch {epoch + 1} is more "
                           f"than {self.growth:g}x the first epoch's {self.first_epoch_loss:.4g} "
                           f"(learning rate {self._lr():.6g}); lower --lr, or raise "
                           "--divergence-factor (0: no bound)", self.rank, everywhere=True)

    def on_train_batch_begin(self, batch, logs=None):
        if self.loss_scale:
            self.scale_before = self.loss_scale()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        at = self.position
        if self.loss_scale:
            self._note_skipped_step(at)
        if math.isfinite(float(loss)) or self._skipping_overflows():
            if math.isfinite(float(loss)):
                self.last_good = (at.global_step, float(loss))
            return
        good = (f"last finite loss {self.last_good[1]:.4f} at step {self.last_good[0]}"
                if self.last_good else "no finite loss before it")
        raise NonFiniteLoss(
            f"loss became {float(loss)} on rank {self.rank} at epoch {at.epoch + 1} step {at.batch} "
            f"(global step {at.global_step}), learning rate {self._lr():.6g}; {good}; "
            f"{self._records(at.epoch, at.batch - 1)}. Lower --lr, lengthen --warmup-epochs, or "
            "check the input data; stopped")

    def _note_skipped_step(self, at) -> None:
        after = self.loss_scale()
        if self.scale_before is not None and after < self.scale_before and self.rank == 0:
            print(f"step {at.global_step} skipped: non-finite float16 gradients; loss scale "
                  f"{self.scale_before:g} -> {after:g}", flush=True)

    def _skipping_overflows(self) -> bool:
        """float16: steps whose gradients overflowed are skipped (the weights do not move) and
        the loss scale halves, down to 1; a skipped step's loss stays in the epoch's running
        mean, so later batches show it too. Non-finite at scale 1, or non-finite weights, is a
        real divergence."""
        if not self.loss_scale or self.loss_scale() <= 1:
            return False
        return all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in self.model.trainable_weights)

    def _records(self, epoch: int, batch: int) -> str:
        if self.batch_ids is None:
            return "the batch's records are not known"
        try:
            ids = self.batch_ids(epoch, batch)
        except Exception as e:          # the diagnosis must not hide the NaN behind another error
            return f"the batch's records could not be listed ({e})"
        shown = ", ".join(ids[:MAX_IDS_SHOWN]) + (f", ... ({len(ids)} in all)" if len(ids) > MAX_IDS_SHOWN else "")
        return f"this rank's batch held records {shown}"

    def _lr(self) -> float:
        opt = self.model.optimizer
        lr = opt.learning_rate
        return float(lr(opt.iterations) if callable(lr) else keras.backend.get_value(lr))
