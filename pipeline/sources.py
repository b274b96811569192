"""The labelled-images source on S3 or a local directory.

Layout: image objects anywhere under a prefix, plus a CSV labels file with a header
`key,label` (and optionally `split`), where `key` is the object's path relative to the prefix.
Listing streams page by page; the labels file is read as a stream of rows.
"""
from __future__ import annotations

import csv
import io
import posixpath
from typing import Iterator

import apache_beam as beam

from pipeline.storage import Storage

REQUIRED_COLUMNS = ("key", "label")


class LabelsFileError(ValueError):
    pass


def relative_key(url: str, prefix: str) -> str:
    return posixpath.relpath(url, prefix.rstrip("/")) if url.startswith("s3://") else \
        posixpath.relpath(url.replace("\\", "/"), prefix.rstrip("/").replace("\\", "/"))


def parse_labels(text: str, where: str) -> Iterator[tuple[str, dict]]:
    """Yield (key, {"label": ..., "split": ...}) per row of a labels CSV."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise LabelsFileError(f"labels file {where} has no column(s) {', '.join(missing)} "
                              f"in its header (found: {reader.fieldnames})")
    for row in reader:
        key = (row.get("key") or "").strip()
        if key:
            yield key, {"label": (row.get("label") or "").strip(),
                        "split": (row.get("split") or "").strip()}


class ListImages(beam.DoFn):
    """prefix -> (key relative to the prefix, (url, size)) for every object but the labels file."""

    def __init__(self, storage: Storage, skip: tuple[str, ...]):
        self.storage, self.skip = storage, set(skip)

    def process(self, prefix: str):
        for url, size in self.storage.list(prefix):
            key = relative_key(url, prefix)
            if url in self.skip or posixpath.basename(key).startswith("."):
                continue
            yield key, (url, size)


class ReadLabels(beam.DoFn):
    def __init__(self, storage: Storage):
        self.storage = storage

    def process(self, url: str):
        yield from parse_labels(self.storage.read_text(url), url)
