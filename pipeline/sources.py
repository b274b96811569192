"""Labelled images on S3 or a local directory, in the layouts people keep them in.

Every source yields *rows*, one dict per input image, the shape every source shares:

    {"id": str, "source": where it came from (for quarantine entries), "url": str | None,
     "image": bytes | None (inline bytes, else read from url), "size": int (bytes, estimated),
     "label": str | None (class name), "split": str ("" = hash of id),
     "attributes": {name: (value, number_of_values)} (attribute-file layout only)}

Layouts (`--layout`, default `auto`):
  labels      images anywhere under the prefix + a labels file, CSV (`key,label[,split]`) or JSONL
              (`{"key": ..., "label": ..., "split": ...}`); key relative to the prefix
  folders     `prefix/<class>/<image>`: the first folder names the class
  attributes  `name.png` beside `name.csv` whose rows are `"attribute", value, number_of_values`
              (Google's Cartoon Set); each attribute becomes a label of its own
Listing streams page by page; labels files are read as a stream of rows.
"""
from __future__ import annotations

import csv
import io
import json
import posixpath
from typing import Iterator

import apache_beam as beam

from pipeline.storage import Storage

REQUIRED_COLUMNS = ("key", "label")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LAYOUTS = ("auto", "labels", "folders", "attributes")
FOLDERS = "folders"


class LabelsFileError(ValueError):
    pass


def relative_key(url: str, prefix: str) -> str:
    return posixpath.relpath(url, prefix.rstrip("/")) if url.startswith("s3://") else \
        posixpath.relpath(url.replace("\\", "/"), prefix.rstrip("/").replace("\\", "/"))


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


def parse_attributes(text: str) -> dict[str, tuple[int, int]]:
    """Cartoon Set attribute file -> {attribute: (value, number_of_values)}; ValueError if bad."""
    found = {}
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not row:
            continue
        if len(row) != 3:
            raise ValueError(f"row {row} does not have 3 fields (attribute, value, number_of_values)")
        name, value, count = row[0].strip(), int(row[1]), int(row[2])
        if not name or "/" in name or name == "name":
            raise ValueError(f"attribute name {name!r} is not usable")
        if not 0 <= value < count:
            raise ValueError(f"{name} = {value} is outside 0..{count - 1}")
        if name in found:
            raise ValueError(f"attribute {name} appears twice")
        found[name] = (value, count)
    if not found:
        raise ValueError("no attributes in the file")
    return found


def image_row(key: str, url: str, size: int, label: str | None = None, split: str = "",
              attributes: dict | None = None) -> dict:
    return {"id": key, "source": url, "url": url, "image": None, "size": size, "label": label,
            "split": split, "attributes": attributes or {}}


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_EXTENSIONS)


class ListTopLevel(beam.DoFn):
    """source -> its files (main output, as ListFiles yields them) and its folders (FOLDERS),
    so each folder is listed by whichever worker gets it: a billion keys are not listed by one."""

    def __init__(self, storage: Storage, skip: tuple[str, ...] = ()):
        self.storage, self.skip = storage, set(skip)

    def process(self, source: str):
        for url, size in self.storage.list_children(source):
            key = relative_key(url, source)
            if url in self.skip or key.startswith("."):
                continue
            if size is None:
                yield beam.pvalue.TaggedOutput(FOLDERS, (source, url))
            else:
                yield key, (url, size)


class ListFiles(beam.DoFn):
    """(source, folder) -> (key relative to the source, (url, size)) for every file under the
    folder but hidden and skipped ones."""

    def __init__(self, storage: Storage, skip: tuple[str, ...] = ()):
        self.storage, self.skip = storage, set(skip)

    def process(self, element):
        source, folder = element
        for url, size in self.storage.list(folder):
            key = relative_key(url, source)
            if url in self.skip or any(part.startswith(".") for part in key.split("/")):
                continue
            yield key, (url, size)


class ReadLabels(beam.DoFn):
    def __init__(self, storage: Storage):
        self.storage = storage

    def process(self, url: str):
        yield from parse_labels(self.storage.read_text(url), url)


class JoinLabels(beam.DoFn):
    """(key, {images, labels}) -> a row, or a quarantine entry when the two sides disagree."""

    def process(self, element):
        from pipeline.transforms import QUARANTINE, quarantine_entry

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
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine_entry(
                key, found[0][0] if found else key, problem))
            return
        (url, size), row = found[0], rows[0]
        yield image_row(key, url, size, row["label"] or None, row["split"])


def folder_row(element) -> dict:
    """(key, (url, size)) in the folder-per-class layout -> a row labelled by its first folder."""
    key, (url, size) = element
    label = key.split("/")[0] if "/" in key else None
    return image_row(key, url, size, label)


class JoinAttributes(beam.DoFn):
    """(stem, [(kind, (key, (url, size)))]) -> a row with one label per attribute, or quarantine."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def process(self, element):
        from pipeline.transforms import QUARANTINE, quarantine_entry

        stem, grouped = element
        found = sorted(file for kind, file in grouped if kind == "images")
        files = sorted(file for kind, file in grouped if kind == "attributes")
        if not found:
            return        # an attribute file without an image: nothing to ingest
        (key, (url, size)), others = found[0], found[1:]
        for other_key, (other_url, _) in others:   # a.png and a.jpg: one id, two images
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine_entry(
                other_key, other_url, f"duplicate id: {stem} also has the image {key}"))
        try:
            if not files:
                raise ValueError(f"no attribute file {stem}.csv beside the image")
            attributes = parse_attributes(self.storage.read_text(files[0][1][0]))
        except (ValueError, UnicodeDecodeError) as e:
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine_entry(
                key, url, f"bad attribute file: {e}"))
            return
        yield image_row(key, url, size, attributes=attributes)


def by_stem(element):
    """Attribute layout: (key, file) -> (stem, ("attributes" for .csv else "images", (key, file)))."""
    key, file = element
    stem, extension = posixpath.splitext(key)
    kind = "attributes" if extension.lower() == ".csv" else "images"
    return stem, (kind, (key, file))
