"""The `folders` layout: `prefix/<class>/<image>`, the first folder names the class."""
from __future__ import annotations

import apache_beam as beam

from pipeline.sources.rows import image_row


def folder_row(element) -> dict:
    """(key, (url, size)) -> a row labelled by its first folder (None at the top level)."""
    key, (url, size) = element
    label = key.split("/")[0] if "/" in key else None
    return image_row(key, url, size, label)


class FolderRows(beam.PTransform):
    """files (key, (url, size)) -> (rows, quarantine); a file outside any folder gets no label
    and is quarantined later, by the label check."""

    def expand(self, files):
        rows = files | "FolderRows" >> beam.Map(folder_row)
        return rows, files.pipeline | "NoRejects" >> beam.Create([])
