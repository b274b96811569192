"""predictions.parquet: one row per test image and head, from the run's final test evaluation.

Each rank writes the rows of its own share to a local Parquet part, a batch at a time, and
uploads it (`predictions-parts/part-<rank>-of-<size>.parquet` beside the report) before the
scores are summed over ranks, so every part is there once that collective returns; rank 0 then
copies the parts, a row group at a time, into `predictions.parquet` and removes them. No process
ever holds more than a batch of rows, whatever the size of the test split.

The rows come from the same logits as the confusion matrices (trainer/results/scores.py): a
row's `predicted` is the argmax that counted it, so the table agrees exactly with report.json.
The nightly writes the same table for the models it compares (infra/nightly/evaluate.py, from
their serving signatures' probabilities) and `compare` says what one got right and the other not."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.dataset.storage import join

TOP = 5
NAME = "predictions.parquet"
PARTS = "predictions-parts"
SCHEMA = pa.schema([
    ("head", pa.string()),              # "label", or the attribute of a multi-head run
    ("id", pa.string()),
    ("label", pa.int64()), ("label_name", pa.string()),
    ("predicted", pa.int64()), ("predicted_name", pa.string()),
    ("probability", pa.float32()),      # of the predicted class
    ("top_classes", pa.list_(pa.string())), ("top_probabilities", pa.list_(pa.float32())),
    ("correct", pa.bool_()),
])


def beside(report_url: str, name: str) -> str:
    base = report_url.rsplit("/", 1)[0] if "/" in report_url else "."
    return join(base, name)


def part_url(report_url: str, rank: int, size: int) -> str:
    return beside(report_url, f"{PARTS}/part-{rank:05d}-of-{size:05d}.parquet")


def head_name(head) -> str:
    return head.attribute or "label"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def rows(head, ids: list[str], labels: np.ndarray, logits: np.ndarray) -> pa.RecordBatch:
    """One batch's rows for one head, from its logits: `predicted` is their argmax (the
    confusion matrix's)."""
    return scored_rows(head_name(head), head.classes, ids, labels, logits, softmax(logits))


def scored_rows(head: str, classes: list[str], ids: list[str], labels: np.ndarray, scores: np.ndarray,
                probabilities: np.ndarray) -> pa.RecordBatch:
    """One batch's rows: `predicted` is the argmax of `scores` (logits, or the probabilities a
    serving signature returns), the top classes in order of their scores, ties by class index as
    argmax breaks them (so the first is always `predicted`)."""
    predicted = np.argmax(scores, axis=1)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP]
    names = np.asarray(classes, dtype=object)
    return pa.record_batch([
        pa.array([head] * len(ids), pa.string()), pa.array(ids, pa.string()),
        pa.array(labels.astype(np.int64)), pa.array(names[labels].tolist(), pa.string()),
        pa.array(predicted.astype(np.int64)), pa.array(names[predicted].tolist(), pa.string()),
        pa.array(probabilities[np.arange(len(ids)), predicted].astype(np.float32)),
        pa.array(names[top].tolist(), pa.list_(pa.string())),
        pa.array(np.take_along_axis(probabilities, top, axis=1).astype(np.float32).tolist(),
                 pa.list_(pa.float32())),
        pa.array(predicted == labels)], schema=SCHEMA)


def texts(ids) -> list[str]:
    """Record ids as tf.data gives them (bytes) as str."""
    return [i.decode() if isinstance(i, bytes) else str(i) for i in np.asarray(ids).reshape(-1)]


class PartWriter:
    """This rank's rows (or one nightly model's), into a local Parquet file as they come,
    uploaded by `close` (and the local copy removed unless `keep`)."""

    def __init__(self, storage, local_dir: str, url: str, keep: bool = False):
        os.makedirs(local_dir, exist_ok=True)
        self.storage, self.url, self.keep = storage, url, keep
        self.path = os.path.join(local_dir, os.path.basename(url))
        self.writer = pq.ParquetWriter(self.path, SCHEMA)

    def add(self, head, ids, labels: np.ndarray, logits: np.ndarray) -> None:
        self.write(rows(head, texts(ids), np.asarray(labels).reshape(-1), np.asarray(logits)))

    def write(self, batch: pa.RecordBatch) -> None:
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()
        self.storage.upload(self.path, self.url)
        if not self.keep:
            os.remove(self.path)


def combine(storage, report_url: str, size: int, local_dir: str) -> tuple[str, str]:
    """Rank 0: the `size` ranks' parts into predictions.parquet beside the report, a row group
    at a time; the parts removed. Returns (its URL, the local copy, for the pictures)."""
    os.makedirs(local_dir, exist_ok=True)
    path, url = os.path.join(local_dir, NAME), beside(report_url, NAME)
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for rank in range(size):
            part = os.path.join(local_dir, f"part-{rank}.parquet")
            storage.download(part_url(report_url, rank, size), part)
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                writer.write_table(source.read_row_group(group))
            os.remove(part)
    storage.upload(path, url)
    storage.delete_prefix(beside(report_url, PARTS))
    return url, path


def compare(first: str, second: str, names: tuple[str, str], head: str = "label") -> dict[str, dict[str, int]]:
    """Two predictions.parquet files of the same images (local paths), joined on id: per true
    class, how many images each got right that the other got wrong ({class: {name: count}}),
    classes in the order of their label. The join holds the two tables' id and correct columns."""
    wanted = [("head", "=", head)]
    a = pq.read_table(first, columns=["id", "label", "label_name", "correct"], filters=wanted)
    b = pq.read_table(second, columns=["id", "correct"], filters=wanted).rename_columns(["id", "other"])
    joined = a.join(b, "id", join_type="inner")
    if joined.num_rows != a.num_rows or joined.num_rows != b.num_rows:
        raise ValueError(f"{first} and {second} do not hold the same images ({a.num_rows} and "
                         f"{b.num_rows} rows, {joined.num_rows} in common)")
    counts = pa.table({
        "label": joined["label"], "label_name": joined["label_name"],
        names[0]: pc.cast(pc.and_(joined["correct"], pc.invert(joined["other"])), pa.int64()),
        names[1]: pc.cast(pc.and_(joined["other"], pc.invert(joined["correct"])), pa.int64()),
    }).group_by(["label", "label_name"]).aggregate([(names[0], "sum"), (names[1], "sum")]).sort_by("label")
    return {row["label_name"]: {name: row[f"{name}_sum"] for name in names} for row in counts.to_pylist()}
