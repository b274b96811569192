"""Models by name, built for the manifest's image shape and class count."""
from __future__ import annotations

import tensorflow as tf

layers = tf.keras.layers


def cnn(input_shape, num_classes, weight_decay=5e-4):
    """A small CNN with batch norm: three conv stages (32, 64, 128 filters), a dense head with
    dropout. ~9 M multiply-adds per 28x28 image: fast enough to train on CPUs."""
    reg = tf.keras.regularizers.l2(weight_decay) if weight_decay else None

    def conv(filters):
        return [layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg),
                layers.BatchNormalization(), layers.ReLU()]

    return tf.keras.Sequential(
        [layers.Input(input_shape)]
        + conv(32) + [layers.MaxPooling2D()]
        + conv(64) + [layers.MaxPooling2D()]
        + conv(128) + [layers.Dropout(0.2), layers.Flatten()]
        + [layers.Dense(256, use_bias=False, kernel_regularizer=reg),
           layers.BatchNormalization(), layers.ReLU(), layers.Dropout(0.4),
           layers.Dense(num_classes, kernel_regularizer=reg)],
        name="cnn")


MODELS = {"cnn": cnn}


def build_model(name, input_shape, num_classes, weight_decay=5e-4) -> tf.keras.Model:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r} (choose from: {', '.join(sorted(MODELS))})")
    return MODELS[name](tuple(input_shape), num_classes, weight_decay)
