"""The `attributes` layout: `name.png` beside `name.csv`, whose rows are
`"attribute", value, number_of_values` (Google's Cartoon Set); every attribute becomes a label of
its own (`label/<attribute>` in each record, its classes in the manifest's `label_attributes`)."""
from __future__ import annotations

import csv
import io
import posixpath

import apache_beam as beam

from pipeline.dataset import quarantine
from pipeline.dataset.storage import Storage
from pipeline.sources.rows import QUARANTINE, image_row


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


def by_stem(element):
    """(key, file) -> (stem, ("attributes" for .csv else "images", (key, file)))."""
    key, file = element
    stem, extension = posixpath.splitext(key)
    kind = "attributes" if extension.lower() == ".csv" else "images"
    return stem, (kind, (key, file))


class JoinAttributes(beam.DoFn):
    """(stem, [(kind, (key, (url, size)))]) -> a row with one label per attribute, or quarantine."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def process(self, element):
        stem, grouped = element
        found = sorted(file for kind, file in grouped if kind == "images")
        files = sorted(file for kind, file in grouped if kind == "attributes")
        if not found:
            return        # an attribute file without an image: nothing to ingest
        (key, (url, size)), others = found[0], found[1:]
        for other_key, (other_url, _) in others:   # a.png and a.jpg: one id, two images
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(
                other_key, other_url, f"duplicate id: {stem} also has the image {key}"))
        try:
            if not files:
                raise ValueError(f"no attribute file {stem}.csv beside the image")
            attributes = parse_attributes(self.storage.read_text(files[0][1][0]))
        except (ValueError, UnicodeDecodeError) as e:
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(
                key, url, f"bad attribute file: {e}"))
            return
        yield image_row(key, url, size, attributes=attributes)


class AttributeRows(beam.PTransform):
    """files (key, (url, size)) -> (rows, quarantine)."""

    def __init__(self, storage: Storage):
        super().__init__()
        self.storage = storage

    def expand(self, files):
        rows = (files | "ByStem" >> beam.Map(by_stem)
                      | "GroupByStem" >> beam.GroupByKey()
                      | "AttributeRows" >> beam.ParDo(JoinAttributes(self.storage))
                      .with_outputs(QUARANTINE, main="rows"))
        return rows.rows, rows[QUARANTINE]
