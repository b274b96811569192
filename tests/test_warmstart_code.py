"""Warm start restores weights and never runs code that came with a model (issue 26, item 4): a
SavedModel with a Lambda layer whose Python writes a marker file gives its weights by name to our
cnn through the real S3 server, and the marker never appears; a .keras file with such a layer is
refused in one line (Keras's safe_mode)."""
import os

import numpy as np
import pytest

from pipeline.dataset.storage import join

BUCKET = "s3://warmstart-code"


def evil_model(marker: str):
    """Our cnn with a Lambda on top whose Python writes `marker` whenever Keras builds or calls it."""
    from trainer.keras import keras
    from trainer.model.models import build_model

    def leave_a_mark(x, marker=marker):
        with open(marker, "a") as f:
            f.write("ran\n")
        return x

    base = build_model("cnn", (28, 28, 1), 10)
    return keras.Model(base.input, keras.layers.Lambda(leave_a_mark, name="evil")(base.output), name="cnn")


def upload_folder(storage, folder, url) -> None:
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            storage.upload(path, join(url, os.path.relpath(path, folder)))


def test_a_savedmodel_with_a_lambda_gives_its_weights_and_runs_nothing(storage, tmp_path):
    from trainer.model.models import build_model
    from trainer.state.warmstart import load_source, transfer

    marker = str(tmp_path / "MARKER")
    model = evil_model(marker)
    model.save(str(tmp_path / "saved"), save_format="tf")
    os.remove(marker)                           # saving traced the Lambda: only loading matters
    url = f"{BUCKET}/runs/evil/model"
    storage.ensure_bucket(url)
    upload_folder(storage, tmp_path / "saved", url)

    source, described = load_source(storage, url, str(tmp_path / "warmstart"))
    assert not os.path.exists(marker), "the model's Python ran while it was loaded"
    assert described == f"SavedModel {url}"
    target = build_model("cnn", (28, 28, 1), 10)
    restored = transfer(source, target)["restored"]
    assert "block1_conv" in restored and "head" in restored and not os.path.exists(marker)
    for layer in restored:
        for theirs, ours in zip(model.get_layer(layer).get_weights(), target.get_layer(layer).get_weights()):
            np.testing.assert_array_equal(theirs, ours)


def test_a_keras_file_with_a_lambda_is_refused_in_one_line(storage, tmp_path):
    from trainer.errors import UsageError
    from trainer.state.warmstart import load_source

    marker = str(tmp_path / "MARKER")
    evil_model(marker).save(str(tmp_path / "evil.keras"))
    if os.path.exists(marker):
        os.remove(marker)
    url = f"{BUCKET}/files/evil.keras"
    storage.ensure_bucket(url)
    storage.upload(str(tmp_path / "evil.keras"), url)
    with pytest.raises(UsageError, match=f"--init-from {url}: Keras refused to load it safely"):
        load_source(storage, url, str(tmp_path / "warmstart"))
    assert not os.path.exists(marker)
