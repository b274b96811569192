"""Learning rate: scaled with the number of processes, linear warm-up, then cosine decay.

A function of the optimizer's step counter, which is checkpointed, so a resumed run continues
the schedule exactly where it stopped."""
from __future__ import annotations

import math

import tensorflow as tf


@tf.keras.utils.register_keras_serializable("trainer")
class WarmupCosine(tf.keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, base_lr: float, scale: float, warmup_steps: int, total_steps: int):
        self.base_lr, self.scale = base_lr, scale
        self.warmup_steps, self.total_steps = max(0, warmup_steps), max(1, total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak = self.base_lr * self.scale
        warm = self.base_lr + (peak - self.base_lr) * step / max(1, self.warmup_steps)
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        decayed = 0.5 * peak * (1 + tf.cos(math.pi * tf.clip_by_value(progress, 0.0, 1.0)))
        return tf.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"base_lr": self.base_lr, "scale": self.scale,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}
