"""Labelled images on S3 or a local directory, in the layouts people keep them in.

Layouts (`--layout`, default `auto`):
  labels      images anywhere under the prefix + a labels file (labels.py)
  folders     `prefix/<class>/<image>`: the first folder names the class (folders.py)
  attributes  `name.png` beside `name.csv` (attributes.py)
`auto` picks a labels file if there is one, else attributes if the first listed files include
a .csv, else folders."""
from __future__ import annotations

import apache_beam as beam

from pipeline.dataset.storage import Storage, join
from pipeline.sources.attributes import AttributeRows
from pipeline.sources.folders import FolderRows
from pipeline.sources.labels import LabelRows
from pipeline.sources.listing import ListAllFiles

LAYOUTS = ("auto", "labels", "folders", "attributes")
LABELS_NAMES = ("labels.csv", "labels.jsonl")
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
        raise LayoutError(f"no labels file: {source}/labels.csv or labels.jsonl does not "
                          "exist (pass --labels_file)")
    first = [url for (url, _), _ in zip(storage.list(source), range(SNIFF_FILES))]
    if any(url.lower().endswith(".csv") for url in first):
        return "attributes", None
    return "folders", None


class ReadFileRows(beam.PTransform):
    """PBegin -> (rows, quarantine) from the files under `source` in the given layout."""

    def __init__(self, storage: Storage, source: str, layout: str, labels_url: str | None):
        super().__init__()
        self.storage, self.source, self.layout, self.labels_url = storage, source, layout, labels_url

    def expand(self, pbegin):
        files = pbegin | "ListFiles" >> ListAllFiles(self.storage, self.source, (self.labels_url or "",))
        if self.layout == "folders":
            return files | "Folders" >> FolderRows()
        if self.layout == "attributes":
            return files | "Attributes" >> AttributeRows(self.storage)
        return files | "Labels" >> LabelRows(self.storage, self.labels_url)
