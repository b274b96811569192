"""The keras.applications backbones (trainer/model/backbones.py): they build for RGB and grey images
with our "head", refuse too small an image, feed the backbone what ImageNet weights expect,
take weights from a Keras weights file by layer name and shape (local and from the S3 server),
freeze and unfreeze by block with batch norm kept in inference mode. Their training under
horovodrun -np 2 (identical weights on both ranks) is in tests/test_photos.py, on real photos."""
import hashlib
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from pipeline.dataset import records
from pipeline.dataset.manifest import Manifest, Shard, Split, write_manifest
from pipeline.dataset.storage import Storage
from tests.conftest import run_cli
from tests.helpers import png
from trainer.config import TrainConfig
from trainer.errors import UsageError
from trainer.flags import parser
from trainer.input.datasets import Standardize
from trainer.keras import keras
from trainer.model import backbones
from trainer.model.models import build_model
from trainer.state import warmstart
from trainer.train import check_flags

BACKBONES = sorted(backbones.BACKBONES)
PLAIN = {"resnet50": keras.applications.ResNet50, "mobilenet_v2": keras.applications.MobileNetV2,
         "efficientnet_b0": keras.applications.EfficientNetB0, "vgg16": keras.applications.VGG16}


def write_dataset(out: str, size: int, channels: int = 3, train: int = 64, test: int = 16,
                  classes: int = 5) -> str:
    """A published dataset (shards + manifest) of random size x size PNGs, written directly."""
    names = [f"class{i}" for i in range(classes)]
    splits = {}
    for split, count in (("train", train), ("test", test)):
        file = f"noise-{split}.tfrecord-00000-of-00001"
        labels = [i % classes for i in range(count)]
        with tf.io.TFRecordWriter(os.path.join(out, file)) as writer:
            for i, label in enumerate(labels):
                writer.write(records.encode_example(records.ImageRecord(
                    id=f"{split}/{i:04d}", image=png(size, size, channels, seed=i + 100_000 * (split == "test")),
                    image_format="png", height=size, width=size, channels=channels, label=label,
                    label_name=names[label])))
        data = open(os.path.join(out, file), "rb").read()
        splits[split] = Split([Shard(file, count, len(data), hashlib.sha256(data).hexdigest())],
                              np.bincount(labels, minlength=classes).tolist(),
                              pixel_mean=[0.5] * channels, pixel_std=[0.29] * channels)
    manifest = Manifest("noise", names, [size, size, channels], splits, {"count": 0, "by_reason": {}}, {})
    return write_manifest(Storage(), out, manifest)


def randomised(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


# -- building ---------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", BACKBONES)
def test_each_backbone_builds_with_our_float32_head(name, channels, mixed_precision):
    model = build_model(name, (64, 64, channels), 5)
    assert model.name == name and model(tf.zeros((2, 64, 64, channels))).shape == (2, 5)
    head = model.get_layer("head")
    assert model.layers[-1] is head and head.dtype_policy.compute_dtype == "float32"
    assert head.input.shape[-1] == model.get_layer("pool").output.shape[-1]   # heads.attach's features
    assert model.get_layer("unstandardize").dtype_policy.compute_dtype == "float32"
    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert first_conv.dtype_policy.compute_dtype == "float16"
    assert first_conv.kernel.shape[2] == 3                            # grey is repeated to RGB
    assert ("grey_to_rgb" in [layer.name for layer in model.layers]) == (channels == 1)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)   # one flat model
    assert len(model.losses) > 1                                      # --weight-decay on the kernels


def test_layer_names_are_the_same_in_every_build():
    """EfficientNet's preprocessing layers get auto names ("normalization_1" in the second build)
    unless renamed: the names must not depend on what the process built before."""
    first, second = (build_model("efficientnet_b0", (32, 32, 3), 5) for _ in range(2))
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert {"rescaling", "imagenet_normalization", "stem_conv", "top_conv"} <= {l.name for l in first.layers}


@pytest.mark.parametrize("name", BACKBONES)
def test_too_small_an_image_names_the_model_and_the_minimum(name):
    with pytest.raises(UsageError, match=rf"--model {name} needs images of at least 32x32 pixels.*31x64"):
        build_model(name, (31, 64, 3), 5)
    with pytest.raises(UsageError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        build_model(name, (64, 64, 4), 5)


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("channels", [3, 1])
def test_the_backbone_receives_what_imagenet_weights_expect(name, channels):
    """Pixels p, standardised by the pipeline with the dataset's mean and std, arrive at the
    first conv as keras.applications' own preprocess_input(p) (EfficientNet: its Rescaling and
    Normalization give (p/255 - ImageNet mean) / ImageNet std)."""
    mean, std = [0.3, 0.5, 0.6][:channels], [0.2, 0.25, 0.3][:channels]
    standardize = Standardize(mean, std)
    model = build_model(name, (32, 32, channels), 5, standardize=standardize)
    last = "imagenet_normalization" if name == "efficientnet_b0" else "imagenet_preprocess"
    adapter = keras.Model(model.input, model.get_layer(last).output)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, channels)).astype(np.uint8)
    got = adapter(standardize.center(standardize.scale(pixels))).numpy()
    rgb = np.repeat(pixels, 3, axis=-1) if channels == 1 else pixels
    if name == "efficientnet_b0":
        expected = (rgb / 255.0 - backbones.IMAGENET_MEAN) / backbones.IMAGENET_STD
    else:
        module = {"resnet50": keras.applications.resnet50, "vgg16": keras.applications.vgg16,
                  "mobilenet_v2": keras.applications.mobilenet_v2}[name]
        expected = module.preprocess_input(rgb.astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_the_trainer_says_so_in_one_line_when_the_images_are_too_small(tmp_path):
    dataset = str(tmp_path / "small")
    os.makedirs(dataset)
    write_dataset(dataset, size=28, channels=1, train=8, test=4)
    result = run_cli(["trainer", "--dataset", dataset, "--checkpoint-dir", str(tmp_path / "run"),
                      "--cache-dir", str(tmp_path / "cache"), "--model", "resnet50", "--batch-size", "4"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "trainer: error: --model resnet50 needs images of at least 32x32 pixels (keras.applications' "
        "minimum); this dataset's are 28x28: ingest it with --resize (e.g. 64x64) or pick a small "
        "model (cnn, resnet20)")


# -- weights files ----------------------------------------------------------------------------

def test_imagenet_style_h5_restores_by_name_and_shape_locally_and_from_s3(storage, tmp_path):
    """A file in the layout of keras.applications' ImageNet files: the plain model, with its
    top ("predictions", 1000 classes), save_weights("x.h5"). Into our grey-image ResNet-50
    (the channel is repeated, so conv1's RGB kernels fit): every layer of the base restored, the
    head new, "predictions" ignored; the same arrays as keras's own load_weights(by_name=True)."""
    plain = randomised(PLAIN["resnet50"](weights=None, input_shape=(64, 64, 3)))
    path = str(tmp_path / "resnet50_imagenet.h5")
    plain.save_weights(path)
    base_layers = {layer.name for layer in plain.layers if layer.weights} - {"predictions"}

    model = build_model("resnet50", (64, 64, 1), 5)
    for url in (path, "s3://backbones/weights/resnet50_imagenet.h5"):
        if url.startswith("s3://"):
            storage.ensure_bucket(url)
            storage.upload(path, url)
            randomised(model, seed=1)                          # what the second load must undo
        source, described = warmstart.load_source(storage, url, str(tmp_path / "init"))
        assert described == f"Keras weights file {url}"
        moved = warmstart.transfer(source, model)
        assert set(moved["restored"]) == base_layers
        assert moved["new"] == {"head": "not in the source model"}
        for name in ("conv1_conv", "conv3_block2_2_bn", "conv5_block3_3_conv"):
            for mine, theirs in zip(model.get_layer(name).get_weights(), plain.get_layer(name).get_weights()):
                np.testing.assert_array_equal(mine, theirs)

    by_keras = build_model("resnet50", (64, 64, 1), 5)
    by_keras.load_weights(path, by_name=True, skip_mismatch=True)
    for mine, theirs in zip(model.get_weights()[:-2], by_keras.get_weights()[:-2]):   # all but the head
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_keras_model_files_and_positional_weights(tmp_path):
    """A whole model saved as .keras restores by name too; the .weights.h5 layout (by position,
    no layer names) is refused with a line that says what to do."""
    plain = randomised(PLAIN["mobilenet_v2"](weights=None, input_shape=(32, 32, 3), classes=7))
    plain.save(str(tmp_path / "mobilenet.keras"))
    plain.save(str(tmp_path / "mobilenet.h5"))                 # a whole model in HDF5: weights nested
    plain.save_weights(str(tmp_path / "mobilenet.weights.h5"))
    for file, kind in (("mobilenet.keras", "Keras model file"), ("mobilenet.h5", "Keras weights file")):
        model = build_model("mobilenet_v2", (32, 32, 3), 5)
        source, described = warmstart.load_source(Storage(), str(tmp_path / file), str(tmp_path / "init"))
        assert described.startswith(kind)
        moved = warmstart.transfer(source, model)
        assert moved["new"] == {"head": "not in the source model"} and "block_16_project" in moved["restored"]
        np.testing.assert_array_equal(model.get_layer("Conv_1").get_weights()[0],
                                      plain.get_layer("Conv_1").get_weights()[0])
    with pytest.raises(UsageError, match="stored by position, not by layer name"):
        warmstart.load_source(Storage(), str(tmp_path / "mobilenet.weights.h5"), str(tmp_path))
    with pytest.raises(UsageError, match="no such file"):
        warmstart.load_source(Storage(), str(tmp_path / "missing.h5"), str(tmp_path))


def test_efficientnet_keeps_its_imagenet_input_constants(tmp_path):
    """A file's "normalization" weights (keras's ImageNet file: std as the variance; a
    weights=None file: 0 and 1) never replace our ImageNet mean and std**2."""
    plain = randomised(PLAIN["efficientnet_b0"](weights=None, input_shape=(32, 32, 3)))
    plain.save_weights(str(tmp_path / "b0.h5"))
    model = build_model("efficientnet_b0", (32, 32, 3), 5)
    source, _ = warmstart.load_source(Storage(), str(tmp_path / "b0.h5"), str(tmp_path))
    moved = warmstart.transfer(source, model)
    assert "stem_conv" in moved["restored"] and "imagenet_normalization" not in moved["restored"]
    mean, variance, _ = model.get_layer("imagenet_normalization").get_weights()
    np.testing.assert_allclose(mean, backbones.IMAGENET_MEAN, rtol=1e-6)
    np.testing.assert_allclose(variance, np.square(backbones.IMAGENET_STD), rtol=1e-6)


def test_a_backbone_saved_model_reloads_and_transfers(tmp_path):
    """What --init-from <run>/model does with a backbone run's export: the custom adapter layer
    and the weight-decay losses survive SavedModel save and load."""
    trained = randomised(build_model("vgg16", (32, 32, 1), 5, standardize=Standardize([0.4], [0.2])))
    trained.save(str(tmp_path / "model"), include_optimizer=False, save_format="tf")
    source, described = warmstart.load_source(Storage(), str(tmp_path / "model"), str(tmp_path / "init"))
    assert described.startswith("SavedModel")
    model = build_model("vgg16", (32, 32, 1), 5)
    assert warmstart.transfer(source, model)["new"] == {}
    np.testing.assert_array_equal(model.get_layer("head").get_weights()[0],
                                  trained.get_layer("head").get_weights()[0])


# -- freezing -------------------------------------------------------------------------------------

def trainable(model) -> list[str]:
    return [layer.name for layer in model.layers if layer.weights and layer.trainable]


@pytest.mark.parametrize("name, top, trained", [
    ("resnet50", 2, r"conv5_block[23]_\d_conv"),
    ("vgg16", 2, r"block[45]_conv\d"),
    ("mobilenet_v2", 2, r"Conv_1|block_16_(expand|depthwise|project)"),
    ("efficientnet_b0", 2, r"top_conv|block7a_(expand_conv|dwconv|se_reduce|se_expand|project_conv)"),
])
def test_freeze_all_but_head_then_unfreeze_the_top_blocks(name, top, trained):
    model = build_model(name, (32, 32, 3), 5)
    frozen = warmstart.freeze(model, "all-but-head", unfreeze_top=top)
    chosen = trainable(model)
    assert chosen[-1] == "head" and all(re.fullmatch(trained, n) for n in chosen[:-1]), chosen
    assert len(chosen) > top                                         # every conv of those blocks
    assert not [l.name for l in model.layers if isinstance(l, keras.layers.BatchNormalization) and l.trainable]
    assert set(frozen) == {l.name for l in model.layers if l.weights} - set(chosen)
    described = warmstart.describe_frozen(model, frozen)            # the console's line
    assert described.endswith(", head") if len(frozen) > 12 else described == ", ".join(frozen)


def test_weight_decay_leaves_out_frozen_layers():
    model = build_model("vgg16", (32, 32, 3), 5, weight_decay=1e-3)
    warmstart.freeze(model, "all-but-head", unfreeze_top=1)
    decayed = [float(loss) > 0 for loss in model.losses]
    assert len(decayed) == 14 and sum(decayed) == 4                  # block5's 3 convs and the head


def test_blocks_are_counted_from_the_top_of_each_backbone():
    tops = {name: [block for block, _ in backbones.blocks(name, build_model(name, (32, 32, 3), 5))][::-1]
            for name in BACKBONES}
    assert tops["resnet50"][:4] == ["conv5_block3", "conv5_block2", "conv5_block1", "conv4_block6"]
    assert tops["resnet50"][-1] == "conv1" and len(tops["resnet50"]) == 17
    assert tops["vgg16"] == ["block5", "block4", "block3", "block2", "block1"]
    assert tops["mobilenet_v2"][:3] == ["Conv_1", "block_16", "block_15"] and len(tops["mobilenet_v2"]) == 19
    assert tops["efficientnet_b0"][:4] == ["top", "block7a", "block6d", "block6c"]
    assert tops["efficientnet_b0"][-1] == "stem" and len(tops["efficientnet_b0"]) == 18


def test_block_prefixes_unknown_blocks_and_flag_rules():
    model = build_model("resnet50", (32, 32, 3), 5)
    frozen = warmstart.freeze(model, "conv1,conv2,conv3,conv4")        # today's --freeze, by block
    assert frozen == [l.name for l in model.layers if l.weights and re.match("conv[1-4]_", l.name)]
    assert trainable(model)[0] == "conv5_block1_1_conv"
    with pytest.raises(UsageError, match="resnet50 has 17 blocks"):
        warmstart.freeze(build_model("resnet50", (32, 32, 3), 5), "all-but-head", unfreeze_top=18)
    with pytest.raises(UsageError, match="cnn has no blocks"):
        warmstart.freeze(build_model("cnn", (28, 28, 1), 5), "all-but-head", unfreeze_top=1)
    args = ["--dataset", "d", "--checkpoint-dir", "c", "--model", "vgg16", "--unfreeze-top", "2"]
    with pytest.raises(UsageError, match="--unfreeze-top needs --freeze"):
        check_flags(TrainConfig.from_args(parser().parse_args(args)))
    config = TrainConfig.from_args(parser().parse_args([*args, "--freeze", "all-but-head"]))
    check_flags(config)
    assert config.model.unfreeze_top == 2 and config.settings()["unfreeze_top"] == 2


def bn_statistics(model) -> dict:
    return {l.name: l.moving_mean.numpy().copy() for l in model.layers
            if isinstance(l, keras.layers.BatchNormalization)}


@pytest.mark.parametrize("top", [0, 2])
def test_frozen_batch_norm_runs_in_inference_mode(top):
    """After a fit step: the moving statistics of every frozen batch-norm layer (the unfrozen
    blocks' too) are what they were, the head and the unfrozen convs moved; without freezing,
    the same step does change the statistics (the check can fail)."""
    images = tf.random.stateless_uniform((8, 32, 32, 3), (1, 2), -2.0, 2.0)
    labels = tf.constant([0, 1, 2, 3, 4, 0, 1, 2])
    models = {}
    for frozen in (True, False):
        keras.utils.set_random_seed(3)
        model = build_model("mobilenet_v2", (32, 32, 3), 5)
        if frozen:
            warmstart.freeze(model, "all-but-head", unfreeze_top=top)
        model.compile(keras.optimizers.legacy.SGD(0.1),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        before, weights = bn_statistics(model), {l.name: l.get_weights() for l in model.layers}
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
        after = bn_statistics(model)
        models[frozen] = (model, before, after, weights)
    model, before, after, weights = models[True]
    assert all(np.array_equal(before[n], after[n]) for n in before)
    assert not np.array_equal(weights["head"][0], model.get_layer("head").get_weights()[0])
    if top:
        assert not np.array_equal(weights["Conv_1"][0], model.get_layer("Conv_1").get_weights()[0])
    _, before, after, _ = models[False]
    assert not all(np.array_equal(before[n], after[n]) for n in before)
