"""What every store behind Storage does, and the errors a caller sees from any of them.

Tokens: a read can return a token (`read_versioned`) that a later conditional write or delete
names (`if_match`): the change happens only if the object still has that token, else
WriteConflict. That is the compare-and-swap the commit of a dataset and the nightly lock use."""
from __future__ import annotations

import abc
import contextlib
from typing import Iterator


class StorageError(Exception):
    """A storage operation failed; the message names the URL and the cause."""


class WriteConflict(StorageError):
    """A conditional write or delete found the object created, changed or deleted by someone else."""


class TooLarge(Exception):
    """An object holds more bytes than a read was allowed to take (not a store failure: the
    object is the problem, so a caller quarantines it)."""


class Backend(abc.ABC):
    """One kind of store. Reads of a missing object raise FileNotFoundError."""

    @staticmethod
    @abc.abstractmethod
    def join(base: str, *parts: str) -> str:
        """`base` with `parts` appended, as this store spells a path."""

    @staticmethod
    @abc.abstractmethod
    def relative(url: str, prefix: str) -> str:
        """The key of `url` under `prefix`, with / between its parts."""

    @abc.abstractmethod
    def exists(self, url: str) -> bool: ...

    @abc.abstractmethod
    def size(self, url: str) -> int: ...

    @abc.abstractmethod
    def read(self, url: str) -> bytes: ...

    @abc.abstractmethod
    def read_versioned(self, url: str) -> tuple[bytes, str]:
        """(bytes, token)."""

    @abc.abstractmethod
    def read_range(self, url: str, start: int, end: int) -> bytes:
        """Bytes [start, end), fewer at the end of the file."""

    @abc.abstractmethod
    def list(self, prefix_url: str, skipped: list | None = None) -> Iterator[tuple[str, int]]:
        """(url, size) of every file under the prefix, streamed; an entry that is no file to read
        (a local FIFO, device, symlink out of the folder) is appended to `skipped` as (url, why)."""

    @abc.abstractmethod
    def stamps(self, prefix_url: str) -> Iterator[tuple[str, int, str]]:
        """(url, size, stamp) of every file under the prefix: the stamp changes when the file
        does (an S3 ETag, a local file's modification time), so a listing says whether an
        input changed without reading it."""

    @abc.abstractmethod
    def stamp(self, url: str) -> str:
        """One file's stamp (as `stamps`); FileNotFoundError if it is missing."""

    @abc.abstractmethod
    def list_children(self, prefix_url: str, skipped: list | None = None) -> Iterator[tuple[str, int | None]]:
        """One level under the prefix: (url, size) per file, (url, None) per folder; `skipped`
        as for list."""

    @abc.abstractmethod
    def download(self, url: str, local_path: str) -> None:
        """Copy to a local path (Storage renames it into place once complete)."""

    @abc.abstractmethod
    def upload(self, local_path: str, url: str) -> None: ...

    @abc.abstractmethod
    def writing(self, url: str) -> contextlib.AbstractContextManager[str]:
        """A local path to write into; it becomes `url`, whole, when the block ends without error."""

    @abc.abstractmethod
    def write(self, url: str, data: bytes, if_none_match: bool = False,
              if_match: str | None = None) -> str:
        """Write atomically, only if nothing is there (`if_none_match`) or only if the object
        still has the token `if_match`; returns the new token, or raises WriteConflict."""

    @abc.abstractmethod
    def delete(self, url: str, if_match: str | None = None) -> None:
        """Delete (nothing there: nothing to do); with `if_match`, only if the object still has
        that token, else WriteConflict."""

    @abc.abstractmethod
    def delete_prefix(self, prefix_url: str) -> None: ...

    @abc.abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Within this store; no bytes pass through this process where the store can help it."""

    def ensure_bucket(self, url: str) -> None:
        """Create what must exist before a first write (an S3 bucket); most stores need nothing."""
