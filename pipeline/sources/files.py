"""Labelled images on S3 or a local directory, in the layouts people keep them in.

Layouts (`--layout`, default `auto`):
  labels      images anywhere under the prefix + a labels file, CSV, JSONL or Parquet (labels.py)
  folders     `prefix/<class>/<image>`: the first folder names the class (folders.py)
  attributes  `name.png` beside `name.csv` (attributes.py)
`auto` picks a labels file if there is one, else attributes if the first listed files include
a .csv, else folders."""
from __future__ import annotations

import apache_beam as beam

from pipeline.dataset.storage import Storage, join
from pipeline.sources.attributes import AttributeRows
from pipeline.sources.folders import FolderRows
from pipeline.sources.label_columns import LabelColumns
from pipeline.sources.labels import RANGE_BYTES, LabelRows
from pipeline.sources.listing import DEFAULT_MAX_IMAGE_BYTES, ListAllFiles

LAYOUTS = ("auto", "labels", "folders", "attributes")
LABELS_NAMES = ("labels.csv", "labels.jsonl", "labels.parquet")
SNIFF_FILES = 1000


class LayoutError(ValueError):
    """No layout fits what is under the source; the message says what is missing."""


def detect_layout(storage: Storage, source: str, layout: str,
                  labels_file: str | None) -> tuple[str, str | None]:
    """(layout, labels file URL or None): the layout asked for, or what `auto` finds."""
    if layout not in ("auto", "labels"):
        return layout, None
    if labels_file:
        return "labels", labels_file
    for name in LABELS_NAMES:
        if storage.exists(join(source, name)):
            return "labels", join(source, name)
    if layout == "labels":
        raise LayoutError(f"no labels file: {source}/labels.csv, labels.jsonl or labels.parquet "
                          "does not exist (pass --labels_file)")
    first = [url for (url, _), _ in zip(storage.list(source), range(SNIFF_FILES))]
    if any(url.lower().endswith(".csv") for url in first):
        return "attributes", None
    return "folders", None


class ReadFileRows(beam.PTransform):
    """PBegin -> (rows, quarantine) from the files under `source` in the given layout; objects
    over `max_bytes` and local entries that are no regular file are quarantined unread."""

    def __init__(self, storage: Storage, source: str, layout: str, labels_url: str | None,
                 max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, columns: LabelColumns = LabelColumns()):
        super().__init__()
        self.storage, self.source, self.layout, self.labels_url = storage, source, layout, labels_url
        self.max_bytes, self.columns = max_bytes, columns

    def expand(self, pbegin):
        files, unread = pbegin | "ListFiles" >> ListAllFiles(self.storage, self.source, (self.labels_url or "",),
                                                             self.max_bytes)
        if self.layout == "folders":
            rows, rejected = files | "Folders" >> FolderRows()
        elif self.layout == "attributes":
            rows, rejected = files | "Attributes" >> AttributeRows(self.storage)
        else:
            rows, rejected = files | "Labels" >> LabelRows(self.storage, self.labels_url, RANGE_BYTES, self.columns)
        return rows, (unread, rejected) | "AllRejected" >> beam.Flatten()
