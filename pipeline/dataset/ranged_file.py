"""A stored file (s3:// or local) as a seekable, read-only Python file, read by ranged GETs:
what pyarrow needs to read one Parquet row group of a large file without fetching the rest
(its footer first, then only the column chunks asked for)."""
from __future__ import annotations

import io

from pipeline.dataset.storage import Storage, is_local

__all__ = ["RangedFile", "open_ranged"]

BUFFER_BYTES = 1 << 20           # small reads (page headers) are served from one ranged GET


class RangedFile(io.RawIOBase):
    """Bytes [position, position + n) of `url` on each read; the size is asked once."""

    def __init__(self, storage: Storage, url: str):
        super().__init__()
        self.storage, self.url = storage, url
        self.length = storage.size(url)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        end = min(self.position + len(buffer), self.length)
        if end <= self.position:
            return 0
        data = self.storage.read_range(self.url, self.position, end)
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)


def open_ranged(storage: Storage, url: str):
    """A local path as it is (pyarrow maps it); an S3 object as a buffered RangedFile."""
    if is_local(url):
        return url
    return io.BufferedReader(RangedFile(storage, url), BUFFER_BYTES)
