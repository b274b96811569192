"""Listing a prefix in parallel: the top level by one worker, each folder under it by whichever
worker gets it, so a billion keys are not listed by one. Listing streams page by page."""
from __future__ import annotations

import apache_beam as beam

from pipeline.dataset.storage import Storage, relative

FOLDERS = "folders"


class ListTopLevel(beam.DoFn):
    """source -> its files (main output, as ListFiles yields them) and its folders (FOLDERS)."""

    def __init__(self, storage: Storage, skip: tuple[str, ...] = ()):
        self.storage, self.skip = storage, set(skip)

    def process(self, source: str):
        for url, size in self.storage.list_children(source):
            key = relative(url, source)
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
            key = relative(url, source)
            if url in self.skip or any(part.startswith(".") for part in key.split("/")):
                continue
            yield key, (url, size)


class ListAllFiles(beam.PTransform):
    """PBegin -> (key, (url, size)) for every file under `source` but hidden ones and `skip`."""

    def __init__(self, storage: Storage, source: str, skip: tuple[str, ...] = ()):
        super().__init__()
        self.storage, self.source, self.skip = storage, source, skip

    def expand(self, pbegin):
        top = (pbegin | "Source" >> beam.Create([self.source])
                      | "ListTopLevel" >> beam.ParDo(ListTopLevel(self.storage, self.skip))
                      .with_outputs(FOLDERS, main="files"))
        nested = (top[FOLDERS] | "SpreadFolders" >> beam.Reshuffle()
                               | "ListFolders" >> beam.ParDo(ListFiles(self.storage, self.skip)))
        return (top.files, nested) | "AllFiles" >> beam.Flatten()
