"""Transfer learning for real: a 10-class run of horovodrun -np 2 exports a SavedModel to the real
S3 server; a second horovodrun initialises from it on a 2-class dataset published by the real
Beam job (new head, everything else frozen), then from a checkpoint directory."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import join
from tests.conftest import run_cli

PRETRAINED = "s3://fmnist/runs/pretrained"


def horovod(dataset, checkpoints, cache, *extra, epochs=1, batch=16):
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", str(epochs),
            "--batch-size", str(batch), "--cache-dir", str(cache), "--log-every", "1", *extra]


@pytest.fixture(scope="module")
def pretrained(dataset, tmp_path_factory):
    result = run_cli(horovod(dataset, PRETRAINED, tmp_path_factory.mktemp("pre")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return join(PRETRAINED, "model")


@pytest.fixture(scope="module")
def binary_dataset(fmnist):
    """Trouser vs Bag: the same raw images, every other label quarantined by the Beam job."""
    url = "s3://fmnist/datasets/trouser-bag"
    result = run_cli(["pipeline", "--source", fmnist["images"], "--labels_file", fmnist["labels"],
                      "--classes", "Trouser,Bag", "--output", url, "--num_readers", "2",
                      "--splits", "train:0.8,validation:0.2"])
    assert result.returncode == 0, result.stderr[-3000:]
    return url


def local_model(storage, url, where):
    for file_url, _ in storage.list(url):
        storage.download(file_url, os.path.join(where, file_url[len(url) + 1:]))
    return tf.keras.models.load_model(str(where), compile=False)


@pytest.mark.slow        # minutes of end-to-end training: `make test-all` runs it (README)
def test_new_head_on_a_frozen_pretrained_body(storage, pretrained, binary_dataset, tmp_path):
    run = "s3://fmnist/runs/transfer"
    result = run_cli(horovod(binary_dataset, run, tmp_path / "cache", "--init-from", pretrained,
                             "--freeze", "all-but-head", epochs=2, batch=4))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"initialised from SavedModel {pretrained}" in result.stdout
    assert "new: head" in result.stdout

    report = json.loads(storage.read_text(f"{run}/report.json"))
    assert report["init_from"]["new"] == {"head": "shape differs (e.g. another class count)"}
    assert "block1_conv" in report["frozen"] and "head" not in report["frozen"]
    assert report["test"]["examples"] > 0 and "accuracy" in report["test"]   # nightly job reads it
    binary = report["test"]["binary"]
    assert binary["positive_class"] == "Bag" and 0 <= binary["roc_auc"] <= 1
    assert binary["positives"] + binary["negatives"] == report["test"]["examples"]
    for name in ("confusion_matrix", "training_curves", "roc_pr"):
        assert storage.read_bytes(report["plots"][name])[:8] == b"\x89PNG\r\n\x1a\n"

    before = local_model(storage, pretrained, tmp_path / "before")
    after = local_model(storage, f"{run}/model", tmp_path / "after")
    for layer in ("block1_conv", "block3_conv", "fc1", "fc1_bn"):   # frozen: exactly as restored
        for old, new in zip(before.get_layer(layer).get_weights(), after.get_layer(layer).get_weights()):
            np.testing.assert_array_equal(old, new)
    assert after.get_layer("head").get_weights()[0].shape[-1] == 2


def test_init_from_a_checkpoint_directory_restores_chosen_layers(storage, pretrained, binary_dataset,
                                                                 tmp_path):
    result = run_cli(horovod(binary_dataset, "s3://fmnist/runs/transfer-ckpt", tmp_path,
                             "--init-from", PRETRAINED, "--restore", "block1,block2", batch=4))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(rf"initialised from checkpoint {PRETRAINED}/ckpt-\d{{8}} \(cnn\): restored 4 layers",
                     result.stdout), result.stdout[-3000:]


def test_serving_signature_takes_image_bytes(storage, pretrained, fmnist, dataset, tmp_path):
    for file_url, _ in storage.list(pretrained):
        storage.download(file_url, str(tmp_path / file_url[len(pretrained) + 1:]))
    serve = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    images = [url for url, _ in storage.list(fmnist["images"])][:5]
    out = serve(image_bytes=tf.constant([storage.read_bytes(u) for u in images]))
    classes = read_manifest(storage, dataset).classes
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (5, len(classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert [c.decode() for c in out["classes"].numpy()[0]] == classes
    assert [c.decode() for c in out["class"].numpy()] == [classes[i] for i in probabilities.argmax(1)]


@pytest.mark.parametrize("flags, words", [
    (["--init-from", "s3://fmnist/runs/no-such-run"], "neither a SavedModel"),
    (["--freeze", "blockX"], "blockX matches no layer"),
    (["--restore", "block1"], "--restore needs --init-from"),
])
def test_transfer_flag_errors_are_one_line(dataset, tmp_path, flags, words):
    result = run_cli(["trainer", "--dataset", dataset, "--checkpoint-dir", str(tmp_path / "c"),
                      "--cache-dir", str(tmp_path / "cache"), *flags])
    assert result.returncode == 2 and words in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
