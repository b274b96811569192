"""Checks the launcher makes before any worker reads an image, so a job that would fail at
its end (an output it cannot write, a labels file it cannot parse) fails at once, in one line
naming the flag and the URL."""
from __future__ import annotations

import csv
import itertools

from pipeline.dataset.naming import probe as probe_name
from pipeline.dataset.storage import Storage, StorageError, join
from pipeline.sources import parquet_labels
from pipeline.sources.label_columns import LabelColumns, labels_format
from pipeline.sources.labels import LabelsFileError, parse_labels

LABELS_HEAD_BYTES = 1 << 20      # the rows checked up front: the first MiB, however big the file
LABELS_ROWS_CHECKED = 1000


class PreflightError(Exception):
    """An input or output the job cannot use; the message names the flag and the URL."""


def check_output_writable(storage: Storage, output: str, run_id: str) -> None:
    """Write and delete a probe where the job will publish (a read-only file system, a parent
    that is a file, a bucket that refuses writes)."""
    probe = join(output, probe_name(run_id))
    try:
        storage.write_bytes(probe, b"probe")
        storage.delete(probe)
    except StorageError as e:
        raise PreflightError(f"--output {output}: cannot write there: {e}") from None
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise PreflightError(f"--output {output}: cannot write there: "
                             f"{e.strerror or e}{where}") from None


def check_labels_file(storage: Storage, url: str, columns: LabelColumns = LabelColumns()) -> None:
    """The labels file is UTF-8 CSV/JSONL with the required columns, judged by its first rows,
    or a Parquet table whose schema has them, typed as they must be, and whose first row group
    reads."""
    if labels_format(url) == "parquet":
        try:
            return parquet_labels.check(storage, url, columns)
        except LabelsFileError as e:
            raise PreflightError(str(e)) from None
    head = storage.read_head(url, LABELS_HEAD_BYTES)
    if len(head) == LABELS_HEAD_BYTES:           # a longer file: check whole lines only
        head = head[:head.rfind(b"\n") + 1]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PreflightError(f"labels file {url} is not UTF-8 text (byte {e.start:,} is "
                             f"0x{head[e.start]:02x}); expected CSV with a key,label[,split] "
                             "header or JSONL") from None
    if "\x00" in text:
        raise PreflightError(f"labels file {url} holds binary data (a NUL byte); expected CSV "
                             "with a key,label[,split] header or JSONL")
    try:
        for _ in itertools.islice(parse_labels(text, url, columns=columns), LABELS_ROWS_CHECKED):
            pass
    except LabelsFileError as e:
        raise PreflightError(str(e)) from None
    except csv.Error as e:
        raise PreflightError(f"labels file {url} is not valid CSV: {e}") from None
