"""Which columns of a labels file hold what, and which format it is: shared by the text reader
(labels.py: CSV, JSONL) and the Parquet reader (parquet_labels.py).

`--key_column/--label_column/--split_column` name the columns, `key`, `label` and `split` unless
given: a table exported from a warehouse keeps its own column names."""
from __future__ import annotations

import dataclasses

__all__ = ["LabelColumns", "LabelsFileError", "labels_format"]

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
JSONL_SUFFIXES = (".jsonl", ".json")


class LabelsFileError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class LabelColumns:
    """The labels file's column names: the image's key (relative to --source), its label, and
    the optional split (a file without that column gets splits by hash of the key)."""
    key: str = "key"
    label: str = "label"
    split: str = "split"

    @property
    def required(self) -> tuple[str, str]:
        return self.key, self.label

    def missing(self, names) -> list[str]:
        return [c for c in self.required if c not in (names or [])]


def labels_format(url: str) -> str:
    """"parquet", "jsonl" or "csv", from the file's name (as the job has always told them)."""
    if url.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "jsonl" if url.endswith(JSONL_SUFFIXES) else "csv"
