"""ImageNet-class backbones from keras.applications, with our input adapter, pooling and head.

Built with weights=None (nothing is ever downloaded); ImageNet weights come in through
--init-from a weights file, matched by layer name and shape (trainer/state/warmstart.py). So a
backbone's layers keep keras.applications' own names (conv1_conv, block_16_project, ...), all
in one flat model (no nested model: by-name matching and --freeze see every layer).

What the backbone receives: our input pipeline feeds every model the same float images,
standardised with the dataset's per-channel mean and std (trainer/input/datasets.py Standardize; also in
the serving signature). ImageNet weights expect their own preprocessing, so the first layers
turn our input into exactly that:
  unstandardize         Rescaling: back to 0..255 pixels with the dataset's mean and std
  grey_to_rgb           (1-channel datasets) the channel repeated: ImageNet kernels take RGB
  imagenet_preprocess   keras.applications' own preprocess_input of the backbone
                        (resnet50, vgg16: "caffe", RGB->BGR minus the mean pixel;
                        mobilenet_v2: "tf", to [-1, 1])
efficientnet_b0 preprocesses inside the model (Rescaling 1/255, then Normalization with the
ImageNet mean and std); see _own_efficientnet_input for why we set those constants ourselves.
None of these layers has trainable weights or depends on the run's weights: a model trained on
another dataset transfers without carrying that dataset's statistics along."""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable

import numpy as np

from trainer.errors import UsageError
from trainer.keras import keras

layers = keras.layers
MIN_SIZE = 32                      # keras.applications' own minimum for all four (obtain_input_shape)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_CONSTANTS = ("imagenet_normalization",)   # weights that are constants: never transferred


@dataclasses.dataclass(frozen=True)
class Backbone:
    application: Callable            # the keras.applications constructor
    preprocess: str | None           # imagenet_utils.preprocess_input mode; None: in the model
    # How layer names map to blocks: (regex matched at the start, block name or None for the
    # regex's first group). Layers matching none (input adapter, pool, head) are in no block.
    blocks: tuple[tuple[str, str | None], ...]
    dropout: float = 0.0             # before the head, as keras.applications' own top has it
    prepare: Callable[[keras.Model], None] | None = None


def _own_efficientnet_input(base: keras.Model) -> None:
    """EfficientNet's Rescaling and Normalization get auto names ("normalization_3" in a process
    that built others), so they are renamed to stable ones. The Normalization holds the ImageNet
    mean and variance as weights; we set them here, variance = std**2, and name the layer
    "imagenet_normalization" so that no weights file ever overwrites them: keras's ImageNet file
    stores std as the variance and keras compensates with an extra multiply that it adds only
    for weights="imagenet" (tensorflow issue 49930). With our constants the stem receives
    (pixel/255 - mean) / std, what the ImageNet weights were trained on, whether or not the
    weights come from such a file."""
    rescaling = next(layer for layer in base.layers      # not our "unstandardize" Rescaling
                     if isinstance(layer, layers.Rescaling) and layer.name.startswith("rescaling"))
    normalization = next(layer for layer in base.layers if isinstance(layer, layers.Normalization))
    rescaling._name, normalization._name = "rescaling", "imagenet_normalization"
    normalization.set_weights([np.array(IMAGENET_MEAN), np.square(IMAGENET_STD), np.array(1)])
    normalization.finalize_state()


BACKBONES = {
    "resnet50": Backbone(keras.applications.ResNet50, "caffe",
                         ((r"(conv1|pool1)_", "conv1"), (r"(conv\d_block\d+)_", None))),
    "mobilenet_v2": Backbone(keras.applications.MobileNetV2, "tf",
                             ((r"(bn_)?Conv1", "Conv1"), (r"(expanded_conv)_", None),
                              (r"(block_\d+)_", None), (r"(Conv_1|out_relu)", "Conv_1"))),
    "efficientnet_b0": Backbone(keras.applications.EfficientNetB0, None,
                                ((r"stem_", "stem"), (r"(block\d+[a-z])_", None), (r"top_", "top")),
                                dropout=0.2, prepare=_own_efficientnet_input),
    "vgg16": Backbone(keras.applications.VGG16, "caffe", ((r"(block\d+)_", None),)),
}


@keras.utils.register_keras_serializable(package="trainer")
class ImagenetPreprocess(layers.Layer):
    """keras.applications' preprocess_input in `mode` on 0..255 RGB pixels, as a layer: part of
    the model, so training, evaluation and the serving signature all feed the backbone alike."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, pixels):
        return keras.applications.imagenet_utils.preprocess_input(pixels, mode=self.mode)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def check_input_shape(name: str, input_shape) -> None:
    height, width, channels = input_shape
    if min(height, width) < MIN_SIZE:
        raise UsageError(f"--model {name} needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels "
                         f"(keras.applications' minimum); this dataset's are {height}x{width}: "
                         "ingest it with --resize (e.g. 64x64) or pick a small model (cnn, resnet20)")
    if channels not in (1, 3):
        raise UsageError(f"--model {name} takes 1 (grey) or 3 (RGB) channels; this dataset's images "
                         f"have {channels}: ingest it with --channels 3")


def input_adapter(image, spec: Backbone, standardize=None):
    """Our standardised input -> what the backbone's ImageNet weights expect (module docstring).
    `standardize`: trainer.input.datasets.Standardize of the run (its mean and std), None for plain /255.
    float32 layers: the undo of the standardisation should not round in float16."""
    mean = np.asarray(standardize.mean if standardize and standardize.std else 0.0, np.float32)
    std = np.asarray(standardize.std if standardize and standardize.std else 1.0, np.float32)
    x = layers.Rescaling((255.0 * std).tolist(), (255.0 * mean).tolist(), name="unstandardize",
                         dtype="float32")(image)
    if image.shape[-1] == 1:
        x = layers.Concatenate(name="grey_to_rgb", dtype="float32")([x, x, x])
    if spec.preprocess:
        x = ImagenetPreprocess(spec.preprocess, name="imagenet_preprocess", dtype="float32")(x)
    return x


def build(name: str, input_shape, head: layers.Layer, weight_decay: float = 0.0,
          standardize=None) -> keras.Model:
    """Backbone `name` for images of `input_shape`, our global pooling, then `head` (the
    classifier layer, named "head": trainer/model/models.py head_layer)."""
    spec = BACKBONES[name]
    check_input_shape(name, input_shape)
    image = layers.Input(tuple(input_shape), name="image")
    base = spec.application(include_top=False, weights=None, input_shape=(*input_shape[:2], 3),
                            input_tensor=input_adapter(image, spec, standardize))
    if spec.prepare:
        spec.prepare(base)
    decay_kernels(base, weight_decay)
    x = layers.GlobalAveragePooling2D(name="pool")(base.output)
    if spec.dropout:
        x = layers.Dropout(spec.dropout, name="pool_dropout")(x)
    return keras.Model(image, head(x), name=name)


def decay_kernels(base: keras.Model, weight_decay: float) -> None:
    """--weight-decay as an L2 loss on the conv and dense kernels (keras.applications builds its
    layers without regularizers). Depthwise kernels are left out (the MobileNet papers' advice),
    and so are frozen layers: evaluated when the training step is traced, after --freeze."""
    if not weight_decay:
        return
    l2 = keras.regularizers.l2(weight_decay)
    for layer in base.layers:
        if getattr(layer, "kernel", None) is not None:
            # A partial, as Keras's own regularizers are added: a SavedModel cannot encode a
            # lambda's default argument.
            layer.add_loss(functools.partial(_kernel_decay, l2, layer))


def _kernel_decay(l2, layer):
    return l2(layer.kernel) if layer.trainable else 0.0


def block_of(name: str, layer_name: str) -> str | None:
    for pattern, block in BACKBONES[name].blocks:
        found = re.match(pattern, layer_name)
        if found:
            return block or found.group(1)
    return None


def blocks(name: str, model: keras.Model) -> list[tuple[str, list]]:
    """The backbone's blocks, bottom to top, each with its weighted layers."""
    found: dict[str, list] = {}
    for layer in model.layers:
        block = block_of(name, layer.name)
        if block is not None and layer.weights:
            found.setdefault(block, []).append(layer)
    return list(found.items())
