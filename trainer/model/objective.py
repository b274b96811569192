"""What training minimises and how: the loss (label smoothing), class weights, the optimizer."""
from __future__ import annotations

import tensorflow as tf

from pipeline.dataset.manifest import Manifest
from trainer.errors import UsageError
from trainer.keras import keras


def make_loss(num_classes: int, label_smoothing: float = 0.0,
              class_weights: dict[int, float] | None = None):
    """Cross-entropy on logits with integer labels; per-example values so class weights apply.
    `class_weights` weighs each example's loss inside the loss (for models with several outputs,
    where Keras's class_weight does not work); Keras then averages over the batch as it does
    with class_weight."""
    if not label_smoothing and not class_weights:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def smoothed_cross_entropy(labels, logits):
        one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
        return keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True,
                                                        label_smoothing=label_smoothing)
    if not class_weights:
        return smoothed_cross_entropy
    table = tf.constant([class_weights.get(i, 0.0) for i in range(num_classes)], tf.float32)

    def class_weighted_cross_entropy(labels, logits):
        index = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        return smoothed_cross_entropy(labels, logits) * tf.gather(table, index)
    return class_weighted_cross_entropy


def balanced_class_weights(manifest: Manifest) -> dict[int, float]:
    """Balanced weights of the primary label from the training split's class counts."""
    return balanced_weights(manifest.splits["train"].class_counts,
                            f"--class-weights balanced: {manifest.name}")


def balanced_weights(counts: list[int], what: str) -> dict[int, float]:
    """total / (classes x count) per class (the "balanced" rule of scikit-learn): a rare class
    weighs more, the mean weight per image is 1. `what` names the data in the error."""
    present = [c for c in counts if c > 0]
    if len(present) < 2:
        raise UsageError(f"{what} has {len(present)} class(es) with training records")
    total = sum(counts)
    return {i: (total / (len(present) * c) if c else 0.0) for i, c in enumerate(counts)}


def make_optimizer(name: str, learning_rate, momentum: float):
    """Keras 2 legacy optimizers: the ones horovod.tensorflow.keras.DistributedOptimizer wraps."""
    if name == "adam":
        return keras.optimizers.legacy.Adam(learning_rate=learning_rate)
    return keras.optimizers.legacy.SGD(learning_rate=learning_rate, momentum=momentum)
