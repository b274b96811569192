"""Several heads for real: the real Beam job ingests a small Cartoon-Set-like attribute dataset
(each PNG beside its CSV of attributes) into the real S3 server; a real `horovodrun -np 2`
trains one network with one head per attribute, reports per-attribute test metrics and exports a
SavedModel whose signature answers per attribute. Plus unit tests of the flag and the heads."""
import io
import json
import os
import re

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from PIL import Image

from pipeline.dataset.manifest import Manifest, Split, read_manifest
from pipeline.dataset.storage import join
from tests.conftest import run_cli
from tests.test_cli_errors import one_clear_line
from tests.test_predictions import agrees_with
from trainer.errors import UsageError
from trainer.model import heads, objective
from trainer.model.models import build_model
from trainer.state import warmstart

COLORS = ("red", "green", "blue")        # attribute "color": which channel the bar lights
BARS = ("horizontal", "vertical")        # attribute "bar": its direction (flips and crops keep it)
IMAGES = 320
DATASET = "s3://cartoons/datasets/bars"
RUN = "s3://cartoons/runs/heads"


def cartoon(color: int, bar: int, rng) -> bytes:
    """16x16 RGB: dim noise, and a bright 4-pixel bar in one channel across the whole image."""
    pixels = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
    start = rng.integers(2, 10)
    band = (slice(start, start + 4), slice(None)) if bar == 0 else (slice(None), slice(start, start + 4))
    pixels[band + (color,)] = rng.integers(190, 256, pixels[band + (color,)].shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def attributes(i: int) -> tuple[int, int, int]:
    """(color, bar, noise): noise is a third attribute no pixel tells."""
    return i % 3, (i // 3) % 2, (i * 7919 // 13) % 4


@pytest.fixture(scope="module")
def cartoons(storage):
    """The Cartoon Set layout (name.png beside name.csv), ingested by the real Beam job."""
    storage.ensure_bucket("s3://cartoons")
    rng = np.random.default_rng(5)
    root = "s3://cartoons/raw"
    for i in range(IMAGES):
        color, bar, noise = attributes(i)
        storage.write_bytes(join(root, f"cs{i:04d}.png"), cartoon(color, bar, rng))
        storage.write_text(join(root, f"cs{i:04d}.csv"),
                           f'"color", {color}, 3\n"bar", {bar}, 2\n"noise", {noise}, 4\n')
    result = run_cli(["pipeline", "--source", root, "--output", DATASET, "--num_readers", "2",
                      "--label_attribute", "color", "--splits", "train:0.6,validation:0.2,test:0.2"])
    assert result.returncode == 0, result.stderr[-3000:]
    return DATASET


def horovod(dataset, checkpoints, cache, *extra):
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--batch-size", "8",
            "--optimizer", "adam", "--lr", "0.002", "--warmup-epochs", "0.3", "--no-tensorboard",
            "--cache-dir", str(cache), "--log-every", "1", *extra]


@pytest.fixture(scope="module")
def trained(cartoons, tmp_path_factory):
    """--heads all for 3 epochs (with per-attribute class weights, label smoothing and a lower
    weight for the head that cannot learn)."""
    result = run_cli(horovod(cartoons, RUN, tmp_path_factory.mktemp("heads"), "--heads", "all",
                             "--epochs", "3", "--class-weights", "balanced", "--label-smoothing", "0.05",
                             "--head-weights", "noise=0.5"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_one_network_learns_every_attribute_and_serves_each(storage, cartoons, trained, tmp_path):
    result = trained
    ranks = dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]+)", result.stdout))
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"]     # one model on both ranks
    assert "heads: bar (2 classes), color (3 classes), noise (4 classes)" in result.stdout
    assert re.search(r"epoch 3 heads: bar train_acc [\d.]+ val_acc [\d.]+; color", result.stdout)

    report = json.loads(storage.read_text(f"{RUN}/report.json"))
    manifest = read_manifest(storage, cartoons)
    test_count = manifest.splits["test"].num_records
    assert report["heads"] == manifest.label_attributes
    assert report["settings"]["head_weights"] == "noise=0.5"
    tested = report["test"]["heads"]
    assert set(tested) == {"bar", "color", "noise"} and report["test"]["examples"] == test_count
    for attribute, metrics in tested.items():      # what a one-head run reports, per attribute
        classes = manifest.label_attributes[attribute]
        matrix = np.array(metrics["confusion_matrix"])
        assert matrix.shape == (len(classes), len(classes)) and matrix.sum() == test_count
        assert set(metrics["per_class"]) == set(classes)
        assert {"precision", "recall", "f1", "support"} <= set(metrics["per_class"][classes[0]])
        assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / test_count)
    assert tested["color"]["accuracy"] > 0.6           # chance: 1/3
    assert tested["bar"]["accuracy"] > 0.7             # chance: 1/2
    assert "binary" in tested["bar"] and 0 <= tested["bar"]["binary"]["roc_auc"] <= 1
    assert report["test"]["accuracy"] == pytest.approx(np.mean([m["accuracy"] for m in tested.values()]))
    last = report["history"][-1]
    assert {"head_color_accuracy", "head_bar_loss", "val_head_noise_accuracy", "accuracy"} <= set(last)
    for name in ("training_curves", "confusion_matrix_color", "confusion_matrix_bar", "roc_pr_bar",
                 "mistakes_color", "precision_recall_noise"):
        assert name in report["plots"], report.get("plot_errors")
        assert storage.read_bytes(report["plots"][name])[:8] == b"\x89PNG\r\n\x1a\n"
    table = pq.read_table(io.BytesIO(storage.read_bytes(report["predictions"])))    # issue 27: every head
    for attribute, metrics in tested.items():
        agrees_with(table.filter(pc.equal(table["head"], attribute)), metrics, manifest.label_attributes[attribute])

    serve = load_signature(storage, report["model_dir"], tmp_path / "model")
    rng = np.random.default_rng(99)
    truth = [(i % 3, i % 2) for i in range(60)]
    out = serve(image_bytes=tf.constant([cartoon(c, b, rng) for c, b in truth]))
    assert set(out) == {f"{a}_{k}" for a in ("bar", "color", "noise")
                        for k in ("probabilities", "class", "classes")} | {"error"}   # issue 26: per item
    assert not any(out["error"].numpy())
    assert out["color_probabilities"].shape == (60, 3) and out["noise_probabilities"].shape == (60, 4)
    np.testing.assert_allclose(out["bar_probabilities"].numpy().sum(axis=1), 1, rtol=1e-5)
    assert out["color_classes"][0].numpy().tolist() == [b"0", b"1", b"2"]
    served_color = np.mean([int(c) == t[0] for c, t in zip(out["color_class"].numpy(), truth)])
    served_bar = np.mean([int(b) == t[1] for b, t in zip(out["bar_class"].numpy(), truth)])
    assert served_color > 0.6 and served_bar > 0.7, (served_color, served_bar)

    reloaded = tf.keras.models.load_model(str(tmp_path / "model"), compile=False)   # --init-from it
    target = heads.attach(build_model("cnn", (16, 16, 3), 3), heads.choose("color", manifest), 0)
    assert warmstart.transfer(reloaded, target)["new"] == {}


@pytest.mark.slow        # minutes of end-to-end training: `make test-all` runs it (README)
def test_init_from_a_run_with_heads_restores_the_chosen_heads(storage, cartoons, trained, tmp_path):
    """A checkpoint of a --heads run is rebuilt with its heads (the marker names them), so a
    later run on some of the attributes starts from the trained body and heads; that run then
    resumes from its own checkpoint."""
    run = "s3://cartoons/runs/heads-again"
    result = run_cli(horovod(cartoons, run, tmp_path, "--heads", "color", "--epochs", "1",
                             "--init-from", RUN, "--freeze", "all-but-head"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(rf"initialised from checkpoint {RUN}/ckpt-\d{{8}} \(cnn\)", result.stdout)
    assert "new: none" in result.stdout
    report = json.loads(storage.read_text(f"{run}/report.json"))
    assert "head_color" in report["init_from"]["restored"] and "head_color" not in report["frozen"]
    assert set(report["test"]["heads"]) == {"color"}
    assert report["test"]["heads"]["color"]["accuracy"] > 0.6

    again = run_cli(horovod(cartoons, run, tmp_path, "--heads", "color", "--epochs", "2",
                            "--init-from", RUN, "--freeze", "all-but-head"))       # resumes instead
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    steps = report["steps_per_epoch"]
    assert f"resumed from {run}/ckpt-{steps:08d}: epoch 2, 0 of {steps} batches done" in again.stdout
    assert "epoch 1/2" not in again.stdout
    assert json.loads(storage.read_text(f"{run}/report.json"))["resumed_from"]["epoch"] == 1


def load_signature(storage, url, where):
    for file_url, _ in storage.list(url):
        storage.download(file_url, os.path.join(where, file_url[len(url) + 1:]))
    return tf.saved_model.load(str(where)).signatures["serving_default"]


def test_unknown_attribute_is_one_clear_line(cartoons, tmp_path):
    result = run_cli(["trainer", "--dataset", cartoons, "--checkpoint-dir", str(tmp_path),
                      "--heads", "color,colour"])
    assert result.returncode == 2
    one_clear_line(result, "--heads 'color,colour'", "colour is not a label attribute",
                   "available: bar, color, noise")


# Units: the flag, the network, the losses.

def toy_manifest(label_attributes, attribute_counts=None) -> Manifest:
    split = Split(shards=[], class_counts=[1, 1], attribute_counts=attribute_counts or {})
    return Manifest(name="toy", classes=["a", "b"], image_shape=[16, 16, 3], splits={"train": split},
                    quarantine={}, source={}, label_attributes=label_attributes)


ATTRS = {"hair": ["0", "1", "2"], "eye_color": ["0", "1"]}


def test_heads_flag_picks_attributes():
    primary = heads.choose(None, toy_manifest(ATTRS))        # one head on the primary `label`
    assert [(h.attribute, h.name, h.classes) for h in primary] == [(None, "head", ["a", "b"])]
    assert heads.single(primary) and not heads.single(heads.choose("hair", toy_manifest(ATTRS)))
    assert [h.attribute for h in heads.choose("all", toy_manifest(ATTRS))] == ["eye_color", "hair"]
    chosen = heads.choose(" hair ,eye_color", toy_manifest(ATTRS))
    assert [(h.name, h.classes) for h in chosen] == [("head_hair", ATTRS["hair"]),
                                                     ("head_eye_color", ATTRS["eye_color"])]


def test_head_weights_default_to_one():
    chosen = heads.choose("all", toy_manifest(ATTRS), "hair=2.5")
    assert [(h.attribute, h.weight) for h in chosen] == [("eye_color", 1.0), ("hair", 2.5)]
    assert heads.compile_args(chosen, toy_manifest(ATTRS), 0.0, "none")["loss_weights"] == {
        "head_eye_color": 1.0, "head_hair": 2.5}


@pytest.mark.parametrize("spec, weights, words", [
    (None, "hair=2", ["--head-weights needs --heads"]),
    ("hair", "eye_color=2", ["--head-weights 'eye_color=2': 'eye_color' is not one of the heads (hair)"]),
    ("all", "hair=0", ["want attribute=weight with a weight > 0, got 'hair=0'"]),
    ("all", "hair=x", ["got 'hair=x'"]),
    ("all", "hair", ["got 'hair'"]),
])
def test_head_weights_errors_name_the_bad_value(spec, weights, words):
    with pytest.raises(UsageError) as error:
        heads.choose(spec, toy_manifest(ATTRS), weights)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("spec, attrs, words", [
    ("hair", {}, ["--heads hair", "dataset toy has no label attributes"]),
    ("hair,glasses", ATTRS, ["glasses is not a label attribute", "available: eye_color, hair, or 'all'"]),
    (",", ATTRS, ["--heads ',' names no attribute", "available: eye_color, hair"]),
    ("hair,hair", ATTRS, ["names an attribute twice"]),
    ("eye color", {"eye color": ["0", "1"]}, ["'eye color' cannot name a layer"]),
])
def test_heads_flag_errors_name_the_bad_value(spec, attrs, words):
    with pytest.raises(UsageError) as error:
        heads.choose(spec, toy_manifest(attrs))
    for word in words:
        assert word in str(error.value)


def test_heads_replace_the_head_and_keep_the_body():
    single = build_model("cnn", (16, 16, 3), 10)
    chosen = heads.choose("all", toy_manifest(ATTRS))
    model = heads.attach(build_model("cnn", (16, 16, 3), 10), chosen, 5e-4)
    names = [layer.name for layer in model.layers]
    assert "head" not in names and names[-2:] == ["head_eye_color", "head_hair"]
    assert names[:-2] == [layer.name for layer in single.layers][:-1]
    assert {k: v.shape[-1] for k, v in model(tf.zeros((2, 16, 16, 3))).items()} == {
        "head_eye_color": 2, "head_hair": 3}
    frozen = warmstart.freeze(model, warmstart.ALL_BUT_HEAD)     # every head stays trainable
    assert "fc1" in frozen and not any(n.startswith("head") for n in frozen)
    moved = warmstart.transfer(single, model)                      # from a one-head run: body only
    assert "block1_conv" in moved["restored"]
    assert moved["new"] == {"head_eye_color": "not in the source model",
                            "head_hair": "not in the source model"}


def test_class_weights_per_attribute_weigh_each_example_in_its_head_loss():
    toy = toy_manifest(ATTRS, {"hair": [6, 3, 3], "eye_color": [9, 3]})
    args = heads.compile_args(heads.choose("all", toy), toy, 0.0, "balanced")
    labels, logits = tf.constant([0, 1]), tf.constant([[2.0, 0.0], [2.0, 0.0]])
    plain = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    weights = np.array([12 / (2 * 9), 12 / (2 * 3)])                  # total / (classes x count)
    np.testing.assert_allclose(args["loss"]["head_eye_color"](labels, logits), plain * weights, rtol=1e-6)
    with pytest.raises(UsageError, match="attribute eye_color of toy has 1 class"):
        one_class = toy_manifest(ATTRS, {"eye_color": [5, 0]})
        heads.compile_args(heads.choose("eye_color", one_class), one_class, 0.0, "balanced")
    assert isinstance(objective.make_loss(2), tf.keras.losses.SparseCategoricalCrossentropy)
