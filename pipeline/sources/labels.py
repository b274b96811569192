"""The `labels` layout: images anywhere under the prefix plus a labels file, CSV
(`key,label[,split]`, extra columns ignored) or JSONL (`{"key": ..., "label": ..., "split": ...}`);
the key is the object path relative to the prefix.

The file is read in parts of RANGE_BYTES by many workers (ranged reads), as Beam's text sources
split files: a part's rows are the lines that begin in it, so a labels file of 10^9 rows (~50 GB)
is never in one worker's memory. (A CSV field quoted across a line break is therefore not
supported in files larger than one part.)"""
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


RANGE_BYTES = 64 * 2**20          # one worker's part of the labels file
HEADER_BYTES = 2**20              # where the CSV header line must end


def is_jsonl(url: str) -> bool:
    return url.endswith((".jsonl", ".json"))


def parse_labels(text: str, where: str, header: list[str] | None = None,
                 offset: int = 0) -> Iterator[tuple[str, dict]]:
    """Yield (key, {"label": ..., "split": ...}) per row of a labels file (CSV or JSONL), or
    of a part of one that starts at byte `offset` (a CSV part after the first gets the header)."""
    rows = _jsonl_rows(text, where, offset) if is_jsonl(where) else _csv_rows(text, where, header)
    for row in rows:
        key = str(row.get("key") or "").strip()
        if key:
            yield key, {"label": str(row.get("label") or "").strip(),
                        "split": str(row.get("split") or "").strip()}


def _csv_rows(text: str, where: str, header: list[str] | None = None) -> Iterator[dict]:
    reader = csv.DictReader(io.StringIO(text), fieldnames=header)
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise LabelsFileError(f"labels file {where} has no column(s) {', '.join(missing)} "
                              f"in its header (found: {reader.fieldnames})")
    yield from reader


def _jsonl_rows(text: str, where: str, offset: int = 0) -> Iterator[dict]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        at = f"line {number}" if offset == 0 else f"line {number} after byte {offset}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabelsFileError(f"labels file {where} {at} is not JSON: {e}") from None
        if not isinstance(row, dict) or "key" not in row:
            raise LabelsFileError(f"labels file {where} {at} has no \"key\"")
        yield row


def csv_header(storage: Storage, url: str) -> list[str]:
    head = storage.read_head(url, HEADER_BYTES).decode("utf-8-sig", errors="replace")
    header = next(csv.reader(io.StringIO(head.split("\n", 1)[0])), [])
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise LabelsFileError(f"labels file {url} has no column(s) {', '.join(missing)} "
                              f"in its header (found: {header})")
    return header


def lines_in(storage: Storage, url: str, start: int, end: int) -> bytes:
    """The lines that begin in bytes [start, end) of the file, the last one read to its end."""
    data = storage.read_range(url, start - 1 if start else 0, end)
    if start:                        # the line running into this part belongs to the previous
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    at = end
    while data and not data.endswith(b"\n"):
        more = storage.read_range(url, at, at + HEADER_BYTES)
        cut = more.find(b"\n")
        data += more if cut < 0 else more[:cut + 1]
        if cut >= 0 or not more:
            break
        at += len(more)
    return data


class SplitLabelsFile(beam.DoFn):
    """labels URL -> its parts (url, start, end, CSV header or None), for many readers."""

    def __init__(self, storage: Storage, range_bytes: int = RANGE_BYTES):
        self.storage, self.range_bytes = storage, range_bytes

    def process(self, url: str):
        size = self.storage.size(url)
        header = None if is_jsonl(url) else csv_header(self.storage, url)
        for start in range(0, size, self.range_bytes):
            yield url, start, min(start + self.range_bytes, size), header


class ReadLabelsPart(beam.DoFn):
    """(url, start, end, header) -> (key, {"label", "split"}) for the rows that begin there."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def process(self, part):
        url, start, end, header = part
        data = lines_in(self.storage, url, start, end)
        try:
            text = data.decode("utf-8-sig" if start == 0 else "utf-8")
        except UnicodeDecodeError as e:
            raise LabelsFileError(f"labels file {url} is not UTF-8 text at byte "
                                  f"{start + e.start} or so") from None
        yield from parse_labels(text, url, None if start == 0 else header, start)


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

    def __init__(self, storage: Storage, labels_url: str, range_bytes: int = RANGE_BYTES):
        super().__init__()
        self.storage, self.labels_url, self.range_bytes = storage, labels_url, range_bytes

    def expand(self, files):
        labels = (files.pipeline | "LabelsFile" >> beam.Create([self.labels_url])
                                 | "SplitLabelsFile" >> beam.ParDo(SplitLabelsFile(self.storage, self.range_bytes))
                                 | "SpreadParts" >> beam.Reshuffle()
                                 | "ReadLabels" >> beam.ParDo(ReadLabelsPart(self.storage)))
        rows = ({"images": files, "labels": labels}
                | "JoinByKey" >> beam.CoGroupByKey()
                | "LabelRows" >> beam.ParDo(JoinLabels()).with_outputs(QUARANTINE, main="rows"))
        return rows.rows, rows[QUARANTINE]
