"""The `labels` layout: images anywhere under the prefix plus a labels file, CSV
(`key,label[,split]`, extra columns ignored), JSONL (`{"key": ..., "label": ..., "split": ...}`)
or Parquet (parquet_labels.py); the key is the object path relative to the prefix. The columns
are named by LabelColumns (--key_column, --label_column, --split_column).

The file is read in parts of RANGE_BYTES by many workers (ranged reads), as Beam's text sources
split files: a part's rows are the lines that begin in it, so a labels file of 10^9 rows (~50 GB)
is never in one worker's memory. (A CSV field quoted across a line break is therefore not
supported in files larger than one part.)

The pre-flight check (pipeline/preflight.py) refuses a file whose first rows are bad, in one
line. Past them, one bad row (not JSON, not UTF-8, a CSV field over the csv module's limit, a row
over MAX_ROW_BYTES) is one quarantine entry with its line number, never the end of the job; a
line that runs on without a newline is read no further than MAX_ROW_BYTES."""
from __future__ import annotations

import csv
import io
import json
from typing import Iterator

import apache_beam as beam

from pipeline.dataset import quarantine
from pipeline.dataset.storage import Storage
from pipeline.sources import parquet_labels
from pipeline.sources.label_columns import LabelColumns, LabelsFileError, labels_format
from pipeline.sources.rows import QUARANTINE, image_row

DEFAULT_COLUMNS = LabelColumns()

RANGE_BYTES = 64 * 2**20          # one worker's part of the labels file
HEADER_BYTES = 2**20              # where the CSV header line must end
MAX_ROW_BYTES = 2**20             # a longer row is one bad row (an S3 key is at most 1 KiB)
READ_BYTES = 2**20                # what a part reads at a time past its end, to finish its last line


def is_jsonl(url: str) -> bool:
    return labels_format(url) == "jsonl"


def parse_labels(text: str, where: str, header: list[str] | None = None,
                 offset: int = 0, bad: list | None = None,
                 columns: LabelColumns = DEFAULT_COLUMNS) -> Iterator[tuple[str, dict]]:
    """Yield (key, {"label": ..., "split": ...}) per row of a labels file (CSV or JSONL), or
    of a part of one that starts at byte `offset` (a CSV part after the first gets the header).
    A bad row raises LabelsFileError, or with a `bad` list is appended to it as (where in the
    file, why) and skipped."""
    def refuse(number: int, problem: str) -> None:
        at = f"line {number}" if offset == 0 else f"line {number} after byte {offset}"
        if bad is None:
            raise LabelsFileError(f"labels file {where} {at} {problem}")
        bad.append((at, problem))

    rows = (_jsonl_rows(text, refuse, columns) if is_jsonl(where)
            else _csv_rows(text, where, header, refuse, columns))
    for row in rows:
        key = str(row.get(columns.key) or "").strip()
        if key:
            yield key, {"label": str(row.get(columns.label) or "").strip(),
                        "split": str(row.get(columns.split) or "").strip()}


def _csv_rows(text: str, where: str, header: list[str] | None, refuse, columns: LabelColumns) -> Iterator[dict]:
    reader = csv.DictReader(io.StringIO(text), fieldnames=header)
    missing = columns.missing(reader.fieldnames)
    if missing:
        raise LabelsFileError(f"labels file {where} has no column(s) {', '.join(missing)} "
                              f"in its header (found: {reader.fieldnames})")
    while True:
        try:
            row = next(reader)        # after a csv.Error the reader goes on at the next line
        except StopIteration:
            return
        except csv.Error as e:        # (DictReader's own line_num counts good rows only)
            refuse(reader.reader.line_num, f"is not valid CSV: {e}")
            continue
        problem = _row_problem(str(v) for v in row.values() if v is not None)
        if problem:
            refuse(reader.line_num, problem)
        else:
            yield row


def _jsonl_rows(text: str, refuse, columns: LabelColumns) -> Iterator[dict]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        problem = _row_problem([line])
        if problem:
            refuse(number, problem)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            refuse(number, f"is not JSON: {e}")
            continue
        if not isinstance(row, dict) or columns.key not in row:
            refuse(number, f"has no \"{columns.key}\"")
            continue
        yield row


def _row_problem(fields) -> str | None:
    """Why a row's text is bad on its own (too long, bytes that were not UTF-8), or None."""
    size = 0
    for field in fields:
        size += len(field)
        if size > MAX_ROW_BYTES:
            return f"is longer than {MAX_ROW_BYTES:,} bytes"
        if any("\udc80" <= c <= "\udcff" for c in field):       # surrogateescape'd bytes
            return "is not UTF-8 text"
    return None


def csv_header(storage: Storage, url: str, columns: LabelColumns = DEFAULT_COLUMNS) -> list[str]:
    head = storage.read_head(url, HEADER_BYTES).decode("utf-8-sig", errors="replace")
    header = next(csv.reader(io.StringIO(head.split("\n", 1)[0])), [])
    missing = columns.missing(header)
    if missing:
        raise LabelsFileError(f"labels file {url} has no column(s) {', '.join(missing)} "
                              f"in its header (found: {header})")
    return header


def lines_in(storage: Storage, url: str, start: int, end: int,
             max_row: int = MAX_ROW_BYTES) -> tuple[bytes, int | None]:
    """The lines that begin in bytes [start, end) of the file, the last one read to its end, and
    where that last line begins if it was left out because it runs past `max_row` bytes (else
    None). Past `end` it reads READ_BYTES at a time, joined once (linear in what it reads), and
    never more than `max_row` bytes of one line."""
    first = start - 1 if start else 0
    data = storage.read_range(url, first, end)
    if start:                        # the line running into this part belongs to the previous
        cut = data.find(b"\n")
        first, data = first + cut + 1, (data[cut + 1:] if cut >= 0 else b"")
    if not data or data.endswith(b"\n"):
        return data, None
    last = data.rfind(b"\n") + 1      # where the unfinished line begins, in `data`
    chunks, length, at = [], len(data) - last, end
    while length <= max_row:
        more = storage.read_range(url, at, at + min(READ_BYTES, max_row + 1 - length))
        cut = more.find(b"\n")
        chunks.append(more if cut < 0 else more[:cut + 1])
        length += len(chunks[-1])
        if cut >= 0 or not more:
            break
        at += len(more)
    if length > max_row:
        return data[:last], first + last
    return data + b"".join(chunks), None


class SplitLabelsFile(beam.DoFn):
    """labels URL -> its parts (url, start, end, CSV header or None), for many readers."""

    def __init__(self, storage: Storage, range_bytes: int = RANGE_BYTES, columns: LabelColumns = DEFAULT_COLUMNS):
        self.storage, self.range_bytes, self.columns = storage, range_bytes, columns

    def process(self, url: str):
        size = self.storage.size(url)
        header = None if is_jsonl(url) else csv_header(self.storage, url, self.columns)
        for start in range(0, size, self.range_bytes):
            yield url, start, min(start + self.range_bytes, size), header


class ReadLabelsPart(beam.DoFn):
    """(url, start, end, header) -> (key, {"label", "split"}) for the rows that begin there; a
    bad row as a quarantine entry (QUARANTINE) naming its line."""

    def __init__(self, storage: Storage, columns: LabelColumns = DEFAULT_COLUMNS):
        self.storage, self.columns = storage, columns

    def process(self, part):
        url, start, end, header = part
        data, cut_off = lines_in(self.storage, url, start, end)
        # Bytes that are not UTF-8 stay in the text as surrogates: only their rows are bad.
        text = data.decode("utf-8-sig" if start == 0 else "utf-8", errors="surrogateescape")
        bad = []
        for row in parse_labels(text, url, None if start == 0 else header, start, bad, self.columns):
            yield from self.rejected(url, bad)
            yield row
        yield from self.rejected(url, bad)
        if cut_off is not None:
            line = text.count("\n") + 1
            bad.append((f"line {line}" if start == 0 else f"line {line} after byte {start}",
                        f"(at byte {cut_off}) is longer than {MAX_ROW_BYTES:,} bytes"))
            yield from self.rejected(url, bad)

    @staticmethod
    def rejected(url: str, bad: list):
        while bad:
            at, problem = bad.pop(0)
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(
                f"{url} {at}", url, f"bad labels row: {at} {problem}"))


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
        yield image_row(key, url, size, row["label"] or None, row["split"], labels_at=row.get("at"))


def part_readers(storage: Storage, url: str, columns: LabelColumns, range_bytes: int) -> tuple[beam.DoFn, beam.DoFn]:
    """(what cuts the labels file into parts, what reads one part) for its format: byte ranges
    of a text file, row groups of a Parquet table."""
    if labels_format(url) == "parquet":
        return parquet_labels.SplitParquetFile(storage, columns), parquet_labels.ReadRowGroup(storage, columns)
    return SplitLabelsFile(storage, range_bytes, columns), ReadLabelsPart(storage, columns)


class LabelRows(beam.PTransform):
    """files (key, (url, size)) + the labels file at `labels_url` -> (rows, quarantine)."""

    def __init__(self, storage: Storage, labels_url: str, range_bytes: int = RANGE_BYTES,
                 columns: LabelColumns = DEFAULT_COLUMNS):
        super().__init__()
        self.storage, self.labels_url, self.range_bytes, self.columns = storage, labels_url, range_bytes, columns

    def expand(self, files):
        split, read = part_readers(self.storage, self.labels_url, self.columns, self.range_bytes)
        labels = (files.pipeline | "LabelsFile" >> beam.Create([self.labels_url])
                                 | "SplitLabelsFile" >> beam.ParDo(split)     # (url, where a part starts, ...)
                                 | "SpreadParts" >> beam.Reshuffle()
                                 | "ReadLabels" >> beam.ParDo(read)           # (key, {"label", "split"})
                                 .with_outputs(QUARANTINE, main="rows"))
        rows = ({"images": files, "labels": labels.rows}
                | "JoinByKey" >> beam.CoGroupByKey()
                | "LabelRows" >> beam.ParDo(JoinLabels()).with_outputs(QUARANTINE, main="rows"))
        return rows.rows, (labels[QUARANTINE], rows[QUARANTINE]) | "BadRows" >> beam.Flatten()
