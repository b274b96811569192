"""The `labels` layout: images anywhere under the prefix plus a labels file, CSV
(`key,label[,split]`, extra columns ignored) or JSONL (`{"key": ..., "label": ..., "split": ...}`);
the key is the object path relative to the prefix."""
from __future__ import annotations

import csv
import io
import json
from typing import Iterator

import apache_beam as beam

from pipeline.dataset import quarantine
from pipeline.dataset.storage import Storage
from pipeline.sources.rows import QUARANTINE, image_row

REQUIRED_COLUMNS = ("key", "label")


class LabelsFileError(ValueError):
    pass


def parse_labels(text: str, where: str) -> Iterator[tuple[str, dict]]:
    """Yield (key, {"label": ..., "split": ...}) per row of a labels file (CSV or JSONL)."""
    rows = _jsonl_rows(text, where) if where.endswith((".jsonl", ".json")) else _csv_rows(text, where)
    for row in rows:
        key = str(row.get("key") or "").strip()
        if key:
            yield key, {"label": str(row.get("label") or "").strip(),
                        "split": str(row.get("split") or "").strip()}


def _csv_rows(text: str, where: str) -> Iterator[dict]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise LabelsFileError(f"labels file {where} has no column(s) {', '.join(missing)} "
                              f"in its header (found: {reader.fieldnames})")
    yield from reader


def _jsonl_rows(text: str, where: str) -> Iterator[dict]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelsFileError(f"labels file {where} line {number} is not JSON: {e}") from None
        if not isinstance(row, dict) or "key" not in row:
            raise LabelsFileError(f"labels file {where} line {number} has no \"key\"")
        yield row


class ReadLabels(beam.DoFn):
    def __init__(self, storage: Storage):
        self.storage = storage

    def process(self, url: str):
        yield from parse_labels(self.storage.read_text(url), url)


class JoinLabels(beam.DoFn):
    """(key, {images, labels}) -> a row, or a quarantine entry when the two sides disagree."""

    def process(self, element):
        key, grouped = element
        found, rows = list(grouped["images"]), list(grouped["labels"])
        problem = None
        if not found:
            problem = "no image: the labels file names an object that does not exist"
        elif not rows:
            problem = "missing label: the image has no row in the labels file"
        elif len({(r["label"], r["split"]) for r in rows}) > 1:
            problem = f"conflicting labels: {sorted({r['label'] for r in rows})}"
        if problem:
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(
                key, found[0][0] if found else key, problem))
            return
        (url, size), row = found[0], rows[0]
        yield image_row(key, url, size, row["label"] or None, row["split"])


class LabelRows(beam.PTransform):
    """files (key, (url, size)) + the labels file at `labels_url` -> (rows, quarantine)."""

    def __init__(self, storage: Storage, labels_url: str):
        super().__init__()
        self.storage, self.labels_url = storage, labels_url

    def expand(self, files):
        labels = (files.pipeline | "LabelsFile" >> beam.Create([self.labels_url])
                                 | "ReadLabels" >> beam.ParDo(ReadLabels(self.storage)))
        rows = ({"images": files, "labels": labels}
                | "JoinByKey" >> beam.CoGroupByKey()
                | "LabelRows" >> beam.ParDo(JoinLabels()).with_outputs(QUARANTINE, main="rows"))
        return rows.rows, rows[QUARANTINE]
