"""predictions.parquet, mistakes.png and the per-class precision/recall plot (issue 27), from the
final test evaluation of a real `horovodrun -np 2` on a dataset published by the real Beam job:
the table agrees exactly with report.json's accuracy and confusion matrix, one row per test
record; the pictures are readable PNGs of the stated size, bounded for many classes."""
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.dataset import load_index
from pipeline.dataset.manifest import read_manifest
from tests.conftest import run_cli
from tests.test_train_horovod import horovod_cmd
from trainer.model.heads import Head
from trainer.results import batch_grid, mistakes, plots, predictions

RUN = "s3://fmnist/runs/predictions"


def table_of(storage, url: str) -> pa.Table:
    return pq.read_table(io.BytesIO(storage.read_bytes(url)))


def agrees_with(table: pa.Table, result: dict, classes: list[str]) -> None:
    """The rows give exactly the report's confusion matrix and accuracy."""
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(matrix, (table.column("label").to_numpy(), table.column("predicted").to_numpy()), 1)
    assert matrix.tolist() == result["confusion_matrix"]
    assert np.mean(table.column("correct").to_numpy()) == result["accuracy"]
    assert table.num_rows == result["examples"]
    rows = table.to_pylist()
    for row in rows:
        assert row["label_name"] == classes[row["label"]] and row["predicted_name"] == classes[row["predicted"]]
        assert row["top_classes"][0] == row["predicted_name"] and len(row["top_classes"]) == min(5, len(classes))
        assert row["top_probabilities"][0] == row["probability"]
        assert row["top_probabilities"] == sorted(row["top_probabilities"], reverse=True)
        assert row["correct"] == (row["label"] == row["predicted"])


def test_predictions_agree_with_the_report_and_the_mistakes_are_drawn(storage, dataset, tmp_path):
    result = run_cli(horovod_cmd(dataset, RUN, 1, tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(storage.read_text(f"{RUN}/report.json"))
    manifest = read_manifest(storage, dataset)
    assert report["predictions"] == f"{RUN}/predictions.parquet"
    table = table_of(storage, report["predictions"])
    agrees_with(table, report["test"], manifest.classes)
    assert set(table.column("head").to_pylist()) == {"label"}
    test_ids = load_index(dataset, splits=("test",), cache_dir=str(tmp_path / "index")).to_table().column("id")
    assert sorted(table.column("id").to_pylist()) == sorted(test_ids.to_pylist())       # each once
    assert not list(storage.list(f"{RUN}/{predictions.PARTS}"))                          # parts removed

    wrong = int((~table.column("correct").to_numpy()).sum())
    assert wrong > 0, "a one-epoch model with no mistakes: nothing to draw"
    tiles = min(batch_grid.TILES, wrong)
    columns, rows = min(8, tiles), -(-tiles // min(8, tiles))
    picture = Image.open(io.BytesIO(storage.read_bytes(report["plots"]["mistakes"])))
    picture.verify()
    assert picture.format == "PNG" and picture.size == (
        columns * (mistakes.THUMB + 2), rows * (mistakes.THUMB + 3 * batch_grid.CAPTION + 2))
    first = mistakes.most_confident_wrong(local(storage, report, tmp_path), "label")
    assert len(first) == tiles and first[0]["probability"] == max(
        r["probability"] for r in table.to_pylist() if not r["correct"])
    assert storage.read_bytes(report["plots"]["precision_recall"])[:8] == b"\x89PNG\r\n\x1a\n"


def local(storage, report, tmp_path) -> str:
    path = str(tmp_path / "predictions.parquet")
    storage.download(report["predictions"], path)
    return path


def test_the_most_confident_mistakes_are_kept_a_batch_at_a_time(tmp_path):
    """200,000 rows, 3,000 classes: the 64 most confident wrong ones, highest first."""
    rng = np.random.default_rng(1)
    count, classes = 200_000, 3000
    labels, logits_top = rng.integers(0, classes, count), rng.random(count).astype(np.float32)
    predicted = np.where(rng.random(count) < 0.5, labels, (labels + 1) % classes)
    path = str(tmp_path / "p.parquet")
    names = [f"c{i}" for i in range(classes)]
    pq.write_table(pa.table({"head": ["label"] * count, "id": [f"i{i}" for i in range(count)],
                             "label_name": [names[i] for i in labels], "predicted_name": [names[i] for i in predicted],
                             "probability": logits_top, "correct": predicted == labels}), path, row_group_size=50_000)
    kept = mistakes.most_confident_wrong(path, "label")
    wrong = np.flatnonzero(predicted != labels)
    expected = sorted(wrong, key=lambda i: (-logits_top[i], f"i{i}"))[:64]      # ties: by id
    assert [r["id"] for r in kept] == [f"i{i}" for i in expected]
    out = mistakes.draw(kept, {}, str(tmp_path / "m.png"))
    assert Image.open(out).size == (8 * (mistakes.THUMB + 2), 8 * (mistakes.THUMB + 3 * batch_grid.CAPTION + 2))


def test_the_precision_recall_plot_stays_bounded_for_thousands_of_classes(tmp_path):
    per_class = {f"class {i}": {"precision": (i % 97) / 97, "recall": (i % 89) / 89, "f1": (i % 13) / 13,
                                "support": i} for i in range(3000)}
    path = plots.precision_recall(per_class, str(tmp_path / "pr.png"))
    width, height = Image.open(path).size
    assert width <= 1000 and height <= 100 * (0.35 * plots.MAX_CLASSES + 1.5)


def test_rows_name_the_argmax_first_even_on_ties():
    logits = np.array([[1.0, 3.0, 3.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]], np.float32)
    batch = predictions.rows(Head(None, list("abcdef")), ["x", "y"], np.array([2, 0]), logits)
    rows = batch.to_pylist()
    assert [r["predicted_name"] for r in rows] == ["b", "a"] == [r["top_classes"][0] for r in rows]
    assert [r["correct"] for r in rows] == [False, True]
    assert rows[1]["top_probabilities"] == pytest.approx([1 / 6] * 5)


def test_a_head_without_mistakes_gets_a_picture_saying_so(storage, dataset, tmp_path):
    """All right (a head that is easy): no index lookup of no ids, one tile that says so."""
    path = str(tmp_path / "p.parquet")
    pq.write_table(pa.Table.from_batches([predictions.rows(Head(None, ["a", "b"]), ["x", "y"], np.array([0, 1]),
                                                           np.array([[2.0, 0.0], [0.0, 2.0]], np.float32))]), path)
    out = mistakes.mistakes_png(storage, path, "label", dataset, None, str(tmp_path / "m.png"), str(tmp_path / "i"))
    assert Image.open(out).size == (mistakes.THUMB + 2, mistakes.THUMB + batch_grid.CAPTION + 2)
