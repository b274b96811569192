"""Fault injection for tests: make one rank's gradients infinite at one step, as a float16
backward pass that overflows does, while its loss stays finite.

Set TRAINER_FAULT_INF_GRADIENT=<rank>:<global step> (0-based step, counted as the checkpoints
count). Without it nothing here is built into the model's loss."""
from __future__ import annotations

import os

import tensorflow as tf

from trainer.keras import keras

ENV = "TRAINER_FAULT_INF_GRADIENT"


def planned() -> tuple[int, int] | None:
    text = os.environ.get(ENV)
    if not text:
        return None
    rank, _, step = text.partition(":")
    return int(rank), int(step)


class InfGradientAt(keras.callbacks.Callback):
    """Arms `flag` (a tf.Variable read by the loss) for the planned step on the planned rank."""

    def __init__(self, flag: tf.Variable, position, rank: int, plan: tuple[int, int]):
        super().__init__()
        self.flag, self.position, self.rank, self.plan = flag, position, rank, plan

    def on_train_batch_begin(self, batch, logs=None):
        armed = (self.rank, self.position.global_step) == self.plan
        self.flag.assign(1.0 if armed else 0.0)
        if armed:
            print(f"fault injection: rank {self.rank} step {self.position.global_step}: infinite "
                  "gradients", flush=True)


def poison(loss_fn, flag: tf.Variable):
    """The loss with an infinite gradient wherever `flag` is 1; its value is unchanged."""
    @tf.custom_gradient
    def same_forward(logits):
        def backward(dy):
            return dy * tf.where(flag > 0, tf.constant(float("inf"), dy.dtype), tf.ones([], dy.dtype))
        return tf.identity(logits), backward

    def poisoned(labels, logits):
        return loss_fn(labels, same_forward(logits))
    return poisoned
