"""Models by name, built for the manifest's image shape and class count: our own small models
(below) and the ImageNet-class backbones of keras.applications (trainer/model/backbones.py).

Every layer has an explicit name, stable across builds and class counts, so --init-from can
restore weights layer by layer and --freeze can pick layers by name prefix. The classifier layer
(the only one whose shape depends on the class count) is always named "head", and computes in
float32 whatever the precision policy: logits, softmax and the loss stay float32 under
mixed_float16 / mixed_bfloat16 (the Keras mixed-precision guide's rule for the last layer)."""
from __future__ import annotations

import tensorflow as tf

from trainer.keras import keras
from trainer.model import backbones, names

layers = keras.layers
HEAD = "head"


def _reg(weight_decay):
    return keras.regularizers.l2(weight_decay) if weight_decay else None


def _conv_bn_relu(x, filters, kernel, name, reg, strides=1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      kernel_regularizer=reg, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _dense_head(x, widths, num_classes, reg, dropout):
    for i, width in enumerate(widths, 1):
        x = layers.Dense(width, use_bias=False, kernel_regularizer=reg, name=f"fc{i}")(x)
        x = layers.BatchNormalization(name=f"fc{i}_bn")(x)
        x = layers.ReLU(name=f"fc{i}_relu")(x)
        x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return head_layer(num_classes, reg)(x)


def head_layer(num_classes, reg, name=HEAD):
    return layers.Dense(num_classes, kernel_regularizer=reg, name=name, dtype="float32")


def linear(input_shape, num_classes, weight_decay=5e-4):
    """Softmax regression on the pixels: the baseline every dataset should beat, and a model
    without batch norm or dropout, whose result depends only on the data and the updates."""
    inputs = layers.Input(input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    return keras.Model(inputs, head_layer(num_classes, _reg(weight_decay))(x), name="linear")


def cnn(input_shape, num_classes, weight_decay=5e-4):
    """A small CNN with batch norm and dropout: three conv stages (32, 64, 128 filters), a dense
    layer, the head. ~9 M multiply-adds per 28x28 image: fast enough to train on CPUs."""
    return _small_cnn(input_shape, num_classes, weight_decay, ["block2"], ["block3"], "cnn")


def cnn4(input_shape, num_classes, weight_decay=5e-4):
    """cnn with a second 128-filter conv in its last stage: ~16 M multiply-adds per 28x28 image,
    ~1.5x cnn's step time."""
    return _small_cnn(input_shape, num_classes, weight_decay, ["block2"], ["block3", "block3b"], "cnn4")


def cnn5(input_shape, num_classes, weight_decay=5e-4):
    """cnn4 with a second 64-filter conv in its middle stage: ~23 M multiply-adds per 28x28
    image, ~2x cnn's step time; the most accurate of the three on a long run (Fashion-MNIST
    within 15 minutes on 2 cores: 94.08 and 94.05 % on two seeds; cnn4 93.81 and 93.40 %;
    cnn 93.44 %; docs/trainer.md "Accuracy")."""
    return _small_cnn(input_shape, num_classes, weight_decay, ["block2", "block2b"], ["block3", "block3b"],
                      "cnn5")


def _small_cnn(input_shape, num_classes, weight_decay, middle_stage, last_stage, name):
    """The body of cnn, cnn4 and cnn5; their shared layer names let --init-from copy one into
    another."""
    reg = _reg(weight_decay)
    inputs = layers.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, 32, 3, "block1", reg)
    x = layers.MaxPooling2D(name="block1_pool")(x)
    for block in middle_stage:
        x = _conv_bn_relu(x, 64, 3, block, reg)
    x = layers.MaxPooling2D(name="block2_pool")(x)
    for block in last_stage:
        x = _conv_bn_relu(x, 128, 3, block, reg)
    x = layers.Dropout(0.2, name="block3_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _dense_head(x, [256], num_classes, reg, 0.4), name=name)


def shallow_cnn(input_shape, num_classes, weight_decay=5e-4):
    """The tutorials' shallow CNN: a 7x7x64 conv, then 3x3 convs of 128, 256 and 256 filters
    (batch norm after each, max pooling between stages), global average pooling and two dense
    layers with dropout before the head. ~60 M multiply-adds per 28x28 image."""
    reg = _reg(weight_decay)
    inputs = layers.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, 64, 7, "block1", reg)
    x = layers.MaxPooling2D(name="block1_pool")(x)
    x = _conv_bn_relu(x, 128, 3, "block2", reg)
    x = layers.MaxPooling2D(name="block2_pool")(x)
    x = _conv_bn_relu(x, 256, 3, "block3a", reg)
    x = _conv_bn_relu(x, 256, 3, "block3b", reg)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _dense_head(x, [256, 128], num_classes, reg, 0.5),
                          name="shallow_cnn")


def _residual_block(x, filters, strides, name, reg):
    """Basic block of He et al. 2016 (two 3x3 convs), projection shortcut when the shape changes."""
    shortcut = x
    y = _conv_bn_relu(x, filters, 3, f"{name}_a", reg, strides)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg,
                      name=f"{name}_b_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_b_bn")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, kernel_regularizer=reg,
                                 name=f"{name}_proj_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def resnet20(input_shape, num_classes, weight_decay=5e-4):
    """The small CIFAR ResNet (He et al. 2016, section 4.2): a 3x3x16 conv, three stages of three
    basic blocks (16, 32, 64 filters, stride 2 between stages), global pooling, the head.
    ~0.27 M parameters, ~35 M multiply-adds per 28x28 image."""
    reg = _reg(weight_decay)
    inputs = layers.Input(input_shape, name="image")
    x = _conv_bn_relu(inputs, 16, 3, "stem", reg)
    for stage, filters in enumerate((16, 32, 64), 1):
        for block in range(3):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _residual_block(x, filters, strides, f"stage{stage}_block{block + 1}", reg)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, head_layer(num_classes, reg)(x), name="resnet20")


MODELS = {"cnn": cnn, "cnn4": cnn4, "cnn5": cnn5, "shallow_cnn": shallow_cnn, "resnet20": resnet20,
          "linear": linear}
# What --model accepts: MODELS and backbones.BACKBONES, listed without TensorFlow in names.py.
MODEL_NAMES = names.MODEL_NAMES


def random_generators(model: keras.Model) -> dict[str, tf.random.Generator]:
    """The dropout layers' random generators (with Keras's tf.random.Generator mode on), by layer
    name: checkpointed with the weights so a resumed run draws the masks an uninterrupted run
    would have drawn. Keras keeps them in a private attribute; none are found if that changes."""
    found = {}
    for layer in model.layers:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            found[layer.name] = generator
    return found


def build_model(name, input_shape, num_classes, weight_decay=5e-4, standardize=None) -> keras.Model:
    """`standardize` (trainer.input.datasets.Standardize): what the input pipeline did to the images, for
    the backbones' input adapter to undo; our small models take the standardised images as they are."""
    if name in backbones.BACKBONES:
        return backbones.build(name, tuple(input_shape), head_layer(num_classes, _reg(weight_decay)),
                               weight_decay, standardize)
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r} (choose from: {', '.join(MODEL_NAMES)})")
    return MODELS[name](tuple(input_shape), num_classes, weight_decay)
