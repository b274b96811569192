"""Batch scoring (issue 27): `python -m pipeline.score` as a user runs it, on the real Beam
DirectRunner with 2 worker processes, reading images from the S3 server. Its predicted classes
equal the trainer's own evaluation (trainer/input/datasets.eval_dataset and the Keras model) on
the same images; a corrupt and a 20000x20000 image get their errors in their rows, the batch
around them is scored. The model is the trainer's export of an (untrained) linear model: what is
compared is the path from encoded bytes to class, not what the model learnt."""
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset import load_index
from pipeline.dataset.local_paths import relative_key
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.reader import stage
from pipeline.dataset.storage import join
from pipeline.score import table
from tests.conftest import run_cli
from tests.test_cli_errors import one_clear_line
from tests.helpers import png
from tests.test_decode_limits import real_png

ROOT = "s3://fmnist/score"


def trainer_evaluation(storage, dataset: str, model, model_input, cache: str) -> dict[str, int]:
    """{record id: predicted class} of the test split, as the trainer's final evaluation makes it."""
    from trainer.input.datasets import eval_dataset

    manifest = read_manifest(storage, dataset)
    paths = stage(storage, dataset, manifest, "test", list(range(len(manifest.splits["test"].shards))), cache)
    predicted = {}
    for images, _, ids in eval_dataset(paths, model_input.shape, batch_size=64, threads=1, deterministic=True,
                                       standardize=model_input.standardize, sizing=model_input.sizing,
                                       with_ids=True):
        classes = np.argmax(model(images, training=False).numpy(), axis=1)
        predicted.update({i.decode(): int(c) for i, c in zip(ids.numpy(), classes)})
    return predicted


def exported(storage, dataset: str, url: str, local: str):
    from trainer.input.model_input import ModelInput
    from trainer.keras import keras
    from trainer.model import heads
    from trainer.model.models import build_model
    from trainer.results.export import export_model

    manifest = read_manifest(storage, dataset)
    model_input = ModelInput.of(manifest, None)
    keras.utils.set_random_seed(7)
    model = build_model("linear", model_input.shape, len(manifest.classes))
    export_model(storage, model, url, local, heads.choose(None, manifest), model_input)
    return model, model_input


def test_scores_equal_the_trainers_evaluation_and_bad_images_get_their_errors(storage, fmnist, dataset, tmp_path):
    source, output, model_url = f"{ROOT}/images", f"{ROOT}/predictions", f"{ROOT}/model"
    tests = join(fmnist["images"], "test")
    for url, _ in storage.list(tests):                         # the dataset's 150 test images, as uploaded
        storage.write_bytes(join(source, "test", relative_key(tests, url)), storage.read_bytes(url))
    whole = png(28, 28, 1, seed=5)
    storage.write_bytes(f"{source}/bad/corrupt.png", whole[:40] + b"\0" * 30)   # its header, then junk
    storage.write_bytes(f"{source}/bad/huge.png", real_png(20_000, 20_000, "L"))
    storage.write_text(f"{source}/labels.csv", "key,label\n")  # an ingestion layout's labels: left out
    model, model_input = exported(storage, dataset, model_url, str(tmp_path / "export"))

    result = run_cli(["pipeline.score", "--model", model_url, "--source", source, "--output", output,
                      "--batch_size", "32", "--num_files", "3"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(storage.read_text(f"{output}/_summary.json"))
    files = sorted(url for url, _ in storage.list(output) if url.endswith(".parquet"))
    assert summary["files"] == files and len(files) == 3
    scored = pa.concat_tables([pq.read_table(io.BytesIO(storage.read_bytes(u))) for u in files])
    assert scored.schema == table.SCHEMA
    rows = {row["id"]: row for row in scored.to_pylist()}
    assert len(rows) == scored.num_rows == summary["rows"] == 152 and summary["errors"] == 2
    assert rows["bad/huge.png"]["error"] == "too many pixels: 20000x20000 > 50000000"
    assert rows["bad/corrupt.png"]["error"].startswith("cannot decode:")
    assert rows["bad/corrupt.png"]["predicted"] == -1 and rows["bad/corrupt.png"]["predicted_name"] is None

    expected = trainer_evaluation(storage, dataset, model, model_input, str(tmp_path / "data"))
    index = load_index(dataset, splits=("test",), cache_dir=str(tmp_path / "index")).to_table().to_pylist()
    key_of = {r["id"]: "test/" + r["source"].rsplit("/", 1)[-1] for r in index}    # the image it came from
    classes = read_manifest(storage, dataset).classes
    assert len(expected) == 150
    for record_id, predicted in expected.items():
        row = rows[key_of[record_id]]
        assert row["error"] == "" and row["head"] == "label"
        assert (row["predicted"], row["predicted_name"]) == (predicted, classes[predicted]), record_id
        assert row["top_classes"][0] == row["predicted_name"] and len(row["top_classes"]) == 5


def test_flags_that_cannot_work_are_one_line(storage, tmp_path):
    def score(model: str, source: str):
        return run_cli(["pipeline.score", "--model", model, "--source", source, "--output", str(tmp_path / "out")])

    result = score(f"{ROOT}/no-model", str(tmp_path))
    assert result.returncode == 2
    assert one_clear_line(result) == (f"pipeline.score: error: --model {ROOT}/no-model: no committed SavedModel "
                                      "there (no COMMITTED marker)")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "COMMITTED").write_text("")
    result = score(str(tmp_path / "model"), str(tmp_path / "nothing"))
    assert one_clear_line(result) == f"pipeline.score: error: --source {tmp_path / 'nothing'}: nothing there"


def test_a_cassandra_table_is_scored_row_by_row(storage, dataset, cassandra, tmp_path):
    """The table read as ingestion reads it (real Cassandra 2.1, the Beam Cassandra source): one
    row per table row, each scored as the model's own signature scores its bytes; a corrupt and
    an empty image get their errors."""
    import uuid

    import tensorflow as tf

    from infra.local import cassandra_load
    from pipeline.sources.cassandra.config import CassandraConfig
    from pipeline.sources.cassandra.connection import connect

    config = CassandraConfig(hosts=(cassandra.host,), port=cassandra.port, keyspace="score_test",
                             table="incoming", protocol_version=3)
    good = list(cassandra_load.fashion_mnist_rows(20))
    corrupt, empty = uuid.uuid4(), uuid.uuid4()
    cluster, session = connect(config)
    try:
        cassandra_load.create_table(session, config.keyspace, config.table)
        cassandra_load.insert_rows(session, config.keyspace, config.table, good + [
            (corrupt, None, good[0][2][:40] + b"\0" * 30, ""), (empty, None, b"", "")], log=lambda *_: None)
    finally:
        cluster.shutdown()
    exported(storage, dataset, str(tmp_path / "model"), str(tmp_path / "export"))
    output = str(tmp_path / "scores")
    result = run_cli(["pipeline.score", "--model", str(tmp_path / "model"), "--source", config.url, "--output",
                      output, "--cassandra_protocol_version", "3"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {r["id"]: r for r in pq.read_table(output).to_pylist()}       # _summary.json left out
    assert set(rows) == {str(g[0]) for g in good} | {str(corrupt), str(empty)}
    assert rows[str(corrupt)]["error"].startswith("cannot decode:") and rows[str(empty)]["error"]
    serve = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    own = serve(image_bytes=tf.constant([g[2] for g in good]))["class"].numpy()
    assert [rows[str(g[0])]["predicted_name"] for g in good] == [c.decode() for c in own]
    assert all(rows[str(g[0])]["source"].startswith(config.url + "/") for g in good)
