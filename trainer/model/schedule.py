"""Learning rate: scaled with the number of processes, linear warm-up (Goyal et al. 2017), then
cosine or step decay.

A function of the optimizer's step counter, which is checkpointed, so a resumed run continues
the schedule exactly where it stopped."""
from __future__ import annotations

import math

import tensorflow as tf

from trainer.keras import keras


@keras.utils.register_keras_serializable("trainer")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """base_lr -> base_lr x scale linearly over warmup_steps; then either a cosine to 0 at
    total_steps, or the peak times factor**k after the k-th of the step boundaries. Steps are
    optimizer updates: with gradient accumulation (`accumulate` batches per update) the
    optimizer's counter, which counts batches, is divided by it."""

    def __init__(self, base_lr: float, scale: float, warmup_steps: int, total_steps: int,
                 decay: str = "cosine", boundaries: tuple[int, ...] = (), factor: float = 0.1,
                 accumulate: int = 1):
        if decay not in ("cosine", "step"):
            raise ValueError(f"unknown decay {decay!r}")
        self.base_lr, self.scale, self.decay = base_lr, scale, decay
        self.warmup_steps, self.total_steps = max(0, warmup_steps), max(1, total_steps)
        self.boundaries, self.factor = tuple(int(b) for b in boundaries), factor
        self.accumulate = max(1, int(accumulate))

    def __call__(self, step):
        step = tf.cast(step // self.accumulate if self.accumulate > 1 else step, tf.float32)
        peak = self.base_lr * self.scale
        warm = self.base_lr + (peak - self.base_lr) * step / max(1, self.warmup_steps)
        return tf.where(step < self.warmup_steps, warm, self._decayed(step, peak))

    def _decayed(self, step, peak):
        if self.decay == "step":
            passed = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries] or [0.0])
            return peak * tf.pow(tf.constant(self.factor, tf.float32), passed)
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * peak * (1 + tf.cos(math.pi * tf.clip_by_value(progress, 0.0, 1.0)))

    def get_config(self):
        return {"base_lr": self.base_lr, "scale": self.scale, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "decay": self.decay,
                "boundaries": list(self.boundaries), "factor": self.factor,
                "accumulate": self.accumulate}
