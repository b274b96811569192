"""Labels as a Parquet table (`--labels_file ...parquet`), as data engineers export them from a
warehouse: one row per image, columns named by LabelColumns.

Read as the CSV is, by many workers: the launcher's pre-flight reads the schema and the first row
group (`check`), a worker lists the row groups from the footer (SplitParquetFile), and each row
group is read by whichever worker gets it (ReadRowGroup), a batch of rows at a time, only the
three columns: a table of 10^9 rows is never in one worker's memory. (A file written as one row
group is read by one worker; writers cut row groups at about 10^6 rows or 128 MiB by default.)

Types: the key and the split are strings; the label is a string or an integer (its decimal
digits are the class name). A null key is one quarantine entry naming its row (rows count from 0
as pyarrow counts them); a null label is a row without a label, and a label outside the class
list, both quarantined by the label check with the row named too."""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dataset import quarantine
from pipeline.dataset.ranged_file import open_ranged
from pipeline.dataset.storage import Storage
from pipeline.sources.label_columns import LabelColumns, LabelsFileError
from pipeline.sources.rows import QUARANTINE

BATCH_ROWS = 65_536              # rows decoded at a time within a row group
PREFLIGHT_ROWS = 1000


def open_table(storage: Storage, url: str) -> pq.ParquetFile:
    """The file's footer read (a ranged GET on S3); LabelsFileError if it is no Parquet file."""
    try:
        return pq.ParquetFile(open_ranged(storage, url))
    except (pa.ArrowInvalid, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise LabelsFileError(f"labels file {url} is not a Parquet file: {e}") from None


def string_like(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def check_schema(schema: pa.Schema, url: str, columns: LabelColumns) -> list[str]:
    """The columns to read (key, label and the split if there is one); LabelsFileError naming a
    missing or mistyped column."""
    missing = columns.missing(schema.names)
    if missing:
        raise LabelsFileError(f"labels file {url} has no column(s) {', '.join(missing)} "
                              f"(found: {schema.names}; see --key_column/--label_column)")
    wanted = [columns.key, columns.label] + ([columns.split] if columns.split in schema.names else [])
    for name in wanted:
        kind = schema.field(name).type
        fits = string_like(kind) or (name == columns.label and pa.types.is_integer(kind))
        if not fits:
            expected = "a string or an integer" if name == columns.label else "a string"
            raise LabelsFileError(f"labels file {url} column {name!r} is {kind}, expected {expected}")
    return wanted


def check(storage: Storage, url: str, columns: LabelColumns) -> None:
    """The pre-flight: the schema, and the first rows of the first row group decode."""
    table = open_table(storage, url)
    wanted = check_schema(table.schema_arrow, url, columns)
    if table.metadata.num_row_groups:
        try:
            next(table.iter_batches(PREFLIGHT_ROWS, row_groups=[0], columns=wanted), None)
        except (pa.ArrowException, OSError) as e:
            raise LabelsFileError(f"labels file {url}: its first row group does not read: {e}") from None


class SplitParquetFile(beam.DoFn):
    """labels URL -> (url, row group, its first row's number) per row group."""

    def __init__(self, storage: Storage, columns: LabelColumns):
        self.storage, self.columns = storage, columns

    def process(self, url: str):
        meta = open_table(self.storage, url).metadata
        first = 0
        for group in range(meta.num_row_groups):
            yield url, group, first
            first += meta.row_group(group).num_rows


class ReadRowGroup(beam.DoFn):
    """(url, row group, first row) -> (key, {"label", "split", "at"}) per row, "at" naming the
    row for the label check's entries; a row with a null or empty key as a quarantine entry."""

    def __init__(self, storage: Storage, columns: LabelColumns):
        self.storage, self.columns = storage, columns

    def process(self, part):
        url, group, row = part
        table = open_table(self.storage, url)
        wanted = check_schema(table.schema_arrow, url, self.columns)
        for batch in table.iter_batches(BATCH_ROWS, row_groups=[group], columns=wanted):
            keys, labels = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            splits = batch.column(2).to_pylist() if len(wanted) == 3 else [None] * len(keys)
            for key, label, split in zip(keys, labels, splits):
                key = (key or "").strip()
                if key:
                    yield key, {"label": "" if label is None else str(label).strip(),
                                "split": (split or "").strip(), "at": f"{url} row {row}"}
                else:
                    yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(
                        f"{url} row {row}", url, f"bad labels row: row {row} has no {self.columns.key} (null or empty)"))
                row += 1
