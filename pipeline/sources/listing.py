"""Listing a prefix in parallel: the top level by one worker, each folder under it by whichever
worker gets it, so a billion keys are not listed by one. Listing streams page by page.

What is listed but never to be read goes to the quarantine with its reason, before anything is
read: an object over the byte cap (--max_image_bytes), and on a local source whatever is not a
regular file (a FIFO, a device, a symlink out of its folder: pipeline/dataset/backends/local.py)."""
from __future__ import annotations

import apache_beam as beam

from pipeline.dataset import quarantine
from pipeline.dataset.local_paths import key_problem
from pipeline.dataset.storage import Storage, relative
from pipeline.sources.rows import QUARANTINE

FOLDERS = "folders"
DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20      # a 50-megapixel RGBA PNG stored raw is 200 MB


class Listed:
    """What the listing DoFns share: which entries are left out, and why."""

    def __init__(self, storage: Storage, skip: tuple[str, ...] = (), max_bytes: int = DEFAULT_MAX_IMAGE_BYTES):
        self.storage, self.skip, self.max_bytes = storage, set(skip), max_bytes

    def hidden(self, url: str, key: str) -> bool:
        return url in self.skip or any(part.startswith(".") for part in key.split("/"))

    @staticmethod
    def odd_key(source: str, url: str):
        """A quarantine entry (tagged) for a key S3 keeps but no file system or other store
        would (`a//b`, `a/./b`, a trailing /: pipeline/dataset/local_paths.key_problem), else None.
        Checked on the key as listed: relative() would quietly normalise it into another name."""
        prefix = source.rstrip("/") + "/"
        key = url[len(prefix):] if url.startswith(prefix) else url
        problem = key_problem(key)
        if problem is None:
            return None
        return beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(key, url, f"unusable key: {problem}; not read"))

    def too_large(self, key: str, url: str, size: int):
        """A quarantine entry (tagged) when the object is over the cap, else None."""
        if size <= self.max_bytes:
            return None
        return beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(
            key, url, f"too large: {size:,} bytes, over --max_image_bytes {self.max_bytes:,}; not read"))

    def rejected(self, source: str, skipped: list):
        """The skipped entries (url, reason) as quarantine entries; empties the list."""
        while skipped:
            url, reason = skipped.pop(0)
            key = relative(url, source)
            if not self.hidden(url, key):
                yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(key, url, f"not read: {reason}"))


class ListTopLevel(Listed, beam.DoFn):
    """source -> its files (main output, as ListFiles yields them), its folders (FOLDERS), and
    what is left out (QUARANTINE)."""

    def process(self, source: str):
        skipped = []
        for url, size in self.storage.list_children(source, skipped):
            yield from self.rejected(source, skipped)
            odd = self.odd_key(source, url)     # before `relative`, which would normalise it
            key = relative(url, source)
            if url in self.skip or (key.startswith(".") and not odd):
                continue
            if odd:                   # a prefix like "a//" is refused whole, never listed as "a"
                yield odd
            elif size is None:
                yield beam.pvalue.TaggedOutput(FOLDERS, (source, url))
            else:
                yield self.too_large(key, url, size) or (key, (url, size))
        yield from self.rejected(source, skipped)


class ListFiles(Listed, beam.DoFn):
    """(source, folder) -> (key relative to the source, (url, size)) for every file under the
    folder but hidden and skipped ones; what is left out as QUARANTINE."""

    def process(self, element):
        source, folder = element
        skipped = []
        for url, size in self.storage.list(folder, skipped):
            yield from self.rejected(source, skipped)
            key = relative(url, source)
            if self.hidden(url, key):
                continue
            yield self.odd_key(source, url) or self.too_large(key, url, size) or (key, (url, size))
        yield from self.rejected(source, skipped)


class ListAllFiles(beam.PTransform):
    """PBegin -> (files (key, (url, size)) under `source` but hidden ones and `skip`, quarantine
    entries of what is listed but not to be read)."""

    def __init__(self, storage: Storage, source: str, skip: tuple[str, ...] = (),
                 max_bytes: int = DEFAULT_MAX_IMAGE_BYTES):
        super().__init__()
        self.storage, self.source, self.skip, self.max_bytes = storage, source, skip, max_bytes

    def expand(self, pbegin):
        top = (pbegin | "Source" >> beam.Create([self.source])
                      | "ListTopLevel" >> beam.ParDo(ListTopLevel(self.storage, self.skip, self.max_bytes))
                      .with_outputs(FOLDERS, QUARANTINE, main="files"))
        nested = (top[FOLDERS] | "SpreadFolders" >> beam.Reshuffle()
                               | "ListFolders" >> beam.ParDo(ListFiles(self.storage, self.skip, self.max_bytes))
                               .with_outputs(QUARANTINE, main="files"))
        files = (top.files, nested.files) | "AllFiles" >> beam.Flatten()
        rejected = (top[QUARANTINE], nested[QUARANTINE]) | "AllUnread" >> beam.Flatten()
        return files, rejected
