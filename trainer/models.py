"""Models by name, built for the manifest's image shape and class count."""
from __future__ import annotations

import tensorflow as tf

layers = tf.keras.layers


def cnn(input_shape, num_classes, weight_decay=5e-4):
    """A small VGG-style CNN with batch norm: two conv blocks and a dense head."""
    reg = tf.keras.regularizers.l2(weight_decay) if weight_decay else None

    def conv(filters):
        return [layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg),
                layers.BatchNormalization(), layers.ReLU()]

    return tf.keras.Sequential(
        [layers.Input(input_shape)]
        + conv(32) + conv(32) + [layers.MaxPooling2D(), layers.Dropout(0.1)]
        + conv(64) + conv(64) + [layers.MaxPooling2D(), layers.Dropout(0.2)]
        + [layers.Flatten(), layers.Dense(256, use_bias=False, kernel_regularizer=reg),
           layers.BatchNormalization(), layers.ReLU(), layers.Dropout(0.3),
           layers.Dense(num_classes, kernel_regularizer=reg)],
        name="cnn")


MODELS = {"cnn": cnn}


def build_model(name, input_shape, num_classes, weight_decay=5e-4) -> tf.keras.Model:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r} (choose from: {', '.join(sorted(MODELS))})")
    return MODELS[name](tuple(input_shape), num_classes, weight_decay)
