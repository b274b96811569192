"""Every file the project reads or writes, by URL: `s3://bucket/key` or a local path.

`Storage` is one front over the backends (backends/: local.py, s3.py), each chosen once per URL
by its scheme (BACKENDS, as TFDS picks a file format's adapter from a registry), so no caller
asks which store a URL is in. Nothing else is accepted: a URL with any other scheme (gs://,
hdfs://, file://, ...) is refused with one line naming it, never taken for a relative local
folder. (No GCS or HDFS server can run here to test a client against; GCS also answers the S3
protocol, see `unsupported`.)

TensorFlow's own s3:// filesystem (tensorflow-io) is not used: it is broken on current
TensorFlow. Writes are atomic on both backends (a local file is written beside its target and
renamed, an S3 PUT is atomic), and writes and deletes can be conditional (create-only,
replace or delete only if unchanged): the commit of a dataset and the nightly lock rely on it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator

from pipeline.dataset.backends.base import Backend, StorageError, TooLarge, WriteConflict
from pipeline.dataset.backends.local import LocalBackend
from pipeline.dataset.backends.s3 import S3Backend, S3Settings, split_s3
from pipeline.dataset.backends.s3_faults import TransientStorageError

__all__ = ["BACKENDS", "S3Settings", "Storage", "StorageError", "TooLarge", "TransientStorageError", "WriteConflict",
           "check_url",
           "is_local", "join", "relative", "split_s3", "unsupported"]

BACKENDS: dict[str, type[Backend]] = {"s3": S3Backend, "": LocalBackend}   # by scheme; "": a path


def scheme(url: str) -> str:
    """"s3" for s3://..., "" for a local path (also one with "://" inside a folder name)."""
    name, sep, _ = url.partition("://")
    return name if sep and "/" not in name else ""


def unsupported(url: str) -> str | None:
    """Why `url` cannot be used (one line), or None for s3:// URLs and local paths."""
    name = scheme(url)
    if name in BACKENDS:
        return None
    hint = (" (GCS also speaks S3: S3 endpoint https://storage.googleapis.com with HMAC keys, "
            "then s3://bucket/...)" if name in ("gs", "gcs") else "")
    return (f"{url}: {name}:// is not supported; use s3://bucket/prefix (AWS or an "
            f"S3-compatible store) or a local path{hint}")


def check_url(url: str) -> str:
    problem = unsupported(url)
    if problem:
        raise StorageError(problem)
    return url


def join(base: str, *parts: str) -> str:
    return BACKENDS.get(scheme(base), LocalBackend).join(base, *parts)


def relative(url: str, prefix: str) -> str:
    """The key of `url` under `prefix`, parts separated by /."""
    return BACKENDS.get(scheme(url), LocalBackend).relative(url, prefix)


def is_local(url: str) -> bool:
    """A path on this machine's file system (a cluster's workers may not see it)."""
    return scheme(url) == ""


class Storage:
    """Read, write, list and move files by URL. Picklable (credentials included), so Beam
    DoFns carry one to every worker; each process builds its own backends (and S3 clients)."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None,
                 settings: S3Settings | None = None):
        settings = settings or S3Settings()
        self.settings = dataclasses.replace(
            settings, endpoint_url=endpoint_url or settings.endpoint_url or None,
            region=region or settings.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
        self._backends: dict[str, Backend] = {}

    @property
    def endpoint_url(self) -> str | None:
        return self.settings.endpoint_url

    def __repr__(self) -> str:
        return f"Storage({self.settings!r})"      # the dataclass repr leaves the secrets out

    def __getstate__(self):
        return {"settings": self.settings}

    def __setstate__(self, state):
        self.__init__(settings=state["settings"])

    def backend(self, url: str) -> Backend:
        """The backend of `url`'s scheme (built once per Storage); StorageError if unsupported."""
        name = scheme(check_url(url))
        if name not in self._backends:
            self._backends[name] = BACKENDS[name](self.settings)
        return self._backends[name]

    # -- reading -----------------------------------------------------------------------------
    def exists(self, url: str) -> bool:
        return self.backend(url).exists(url)

    def size(self, url: str) -> int:
        return self.backend(url).size(url)

    def read_bytes(self, url: str, max_bytes: int | None = None) -> bytes:
        """The whole object; with `max_bytes`, never more than that is read: a larger object (one
        that grew since it was listed at that size) raises TooLarge."""
        if max_bytes is None:
            return self.backend(url).read(url)
        data = self.backend(url).read_range(url, 0, max_bytes + 1)
        if len(data) > max_bytes:
            raise TooLarge(f"{url} holds more than the {max_bytes:,} bytes it was listed with "
                           "(changed since?); not read")
        return data

    def read_text(self, url: str) -> str:
        return self.read_bytes(url).decode("utf-8")

    def read_versioned(self, url: str) -> tuple[bytes, str]:
        """(bytes, token): the token is what a conditional write or delete (`if_match`) expects."""
        return self.backend(url).read_versioned(url)

    def read_head(self, url: str, size: int) -> bytes:
        """The first `size` bytes (a ranged GET): enough to check a huge file's format."""
        return self.read_range(url, 0, size)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        """Bytes [start, end) (fewer at the end of the file; a ranged GET on S3)."""
        return self.backend(url).read_range(url, start, end)

    def list(self, prefix_url: str, skipped: list | None = None) -> Iterator[tuple[str, int]]:
        """Yield (url, size) of every file under a prefix, page by page (never all keys at once).
        Locally only regular files (and symlinks to them inside the prefix): what else is there
        is appended to `skipped` as (url, reason) when a list is given (backends/local.py)."""
        return self.backend(prefix_url).list(prefix_url, skipped)

    def stamps(self, prefix_url: str) -> Iterator[tuple[str, int, str]]:
        """(url, size, stamp) of every file under a prefix; a file's stamp changes when it does."""
        return self.backend(prefix_url).stamps(prefix_url)

    def stamp(self, url: str) -> str:
        return self.backend(url).stamp(url)

    def list_children(self, prefix_url: str, skipped: list | None = None) -> Iterator[tuple[str, int | None]]:
        """One level under a prefix: (url, size) per file, (url, None) per folder, page by page;
        `skipped` as for list."""
        return self.backend(prefix_url).list_children(prefix_url, skipped)

    def download(self, url: str, local_path: str) -> None:
        """To a partial file beside `local_path`, renamed once complete."""
        backend = self.backend(url)
        os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
        partial = f"{local_path}.{os.getpid()}.partial"
        backend.download(url, partial)
        os.replace(partial, local_path)

    # -- writing -----------------------------------------------------------------------------
    def write_bytes(self, url: str, data: bytes, if_none_match: bool = False,
                    if_match: str | None = None) -> str:
        """Write atomically; returns the new token. `if_none_match`: only if nothing is there;
        `if_match`: only if the object still has this token. Either raises WriteConflict."""
        return self.backend(url).write(url, data, if_none_match, if_match)

    def write_text(self, url: str, text: str, **condition) -> str:
        return self.write_bytes(url, text.encode("utf-8"), **condition)

    def writing(self, url: str) -> contextlib.AbstractContextManager[str]:
        """with storage.writing(url) as path: write a local file at `path`; when the block ends
        without error it becomes `url`, whole (renamed beside it, or uploaded): no reader ever
        sees half of it."""
        return self.backend(url).writing(url)

    def upload(self, local_path: str, url: str) -> None:
        self.backend(url).upload(local_path, url)

    def move(self, src: str, dst: str) -> None:
        """Rename locally; on S3 a server-side copy then delete (no bytes pass through here)."""
        if self.backend(src) is not self.backend(dst):
            raise StorageError(f"cannot move between backends: {src} -> {dst}")
        self.backend(src).move(src, dst)

    def delete(self, url: str, if_match: str | None = None) -> None:
        """Delete a file (a local folder: with what is in it); nothing there is no error. With
        `if_match`, only if the object still has that token, else WriteConflict."""
        self.backend(url).delete(url, if_match)

    def delete_prefix(self, prefix_url: str) -> None:
        self.backend(prefix_url).delete_prefix(prefix_url)

    def ensure_bucket(self, url: str) -> None:
        """Create the bucket of an s3:// URL if missing (local stacks and tests)."""
        self.backend(url).ensure_bucket(url)
