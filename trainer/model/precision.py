"""Numeric settings of a run: the Keras precision policy, the loss scaling that goes with it, and
XLA.

The optimizer stack, outermost first (built in trainer/train.py, distributed_optimizer):
  LossScaleOptimizer (mixed_float16 only; dynamic loss scaling)
    hvd.DistributedOptimizer (allreduce; fp16 compression; gradient accumulation)
      SGD / Adam
This is the order Keras itself builds when it compiles a mixed_float16 model, and the only one
Horovod 0.28.1 accepts (DistributedOptimizer cannot rebuild a LossScaleOptimizer from its config:
horovod issue 2989). Horovod averages the scaled gradients; the LossScaleOptimizer then unscales
them and checks that they are finite. The check sees the allreduced gradients, the same numbers
on every rank, so every rank skips a step whose gradients overflowed on any rank, and every rank
lowers its loss scale alike. With --fp16-allreduce the scaled gradients travel as float16, and
dynamic loss scaling keeps them inside float16's range (as PyTorch AMP does with DDP).
bfloat16 has float32's range: no loss scaling."""
from __future__ import annotations

import tensorflow as tf

from trainer.keras import keras


def set_policy(precision: str) -> None:
    """The global Keras policy, before the model is built. Heads are built in float32 (their
    `dtype`), so logits, softmax and the loss are float32 whatever the policy."""
    keras.mixed_precision.set_global_policy(precision)


def set_xla(on: bool) -> None:
    """XLA auto-clustering: TensorFlow compiles the clusters of ops it can (forward, backward,
    the update) and leaves Horovod's collectives outside them. Compiling the whole train step
    (Keras's jit_compile) cannot hold HorovodAllreduce, except with Horovod's GPU-only XLA ops.
    On CPUs it also needs --tf_xla_cpu_global_jit, set by trainer/__main__.py before TensorFlow
    starts."""
    if on:
        tf.config.optimizer.set_jit("autoclustering")


def loss_scaled(distributed, precision: str):
    """The top of the stack above: `distributed` (hvd.DistributedOptimizer, built in
    trainer/train.py) inside a dynamic LossScaleOptimizer for mixed_float16, as it is otherwise."""
    if precision == "mixed_float16":
        return keras.mixed_precision.LossScaleOptimizer(distributed, dynamic=True)
    return distributed


def base_optimizer(optimizer):
    """The optimizer under a LossScaleOptimizer (itself otherwise)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def loss_scale_variables(optimizer) -> list:
    """The dynamic loss scale's state: part of the checkpoint already (it is a child of the
    LossScaleOptimizer), and broadcast with the weights so every rank starts with one scale."""
    state = getattr(optimizer, "_loss_scale", None)
    if state is None or not hasattr(state, "current_loss_scale"):
        return []
    return [state.current_loss_scale, optimizer.dynamic_counter]


def loss_scale(optimizer) -> float | None:
    variables = loss_scale_variables(optimizer)
    return float(variables[0].numpy()) if variables else None
