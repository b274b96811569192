"""Local paths: a file system on this machine, or one every worker mounts at the same path."""
from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import threading
from typing import Iterator

from pipeline.dataset.backends.base import Backend, WriteConflict
from pipeline.dataset.local_files import delete_local, local_token, write_local


class LocalBackend(Backend):
    """Writes are atomic (written beside the target, then renamed); conditional ones compare
    the content's sha256 under an flock (local_files.py)."""

    def __init__(self, settings=None):      # nothing to configure
        pass

    @staticmethod
    def join(base: str, *parts: str) -> str:
        return os.path.join(base, *parts)

    @staticmethod
    def relative(url: str, prefix: str) -> str:
        return posixpath.relpath(url.replace("\\", "/"), prefix.rstrip("/").replace("\\", "/"))

    def exists(self, url: str) -> bool:
        return os.path.exists(url)

    def size(self, url: str) -> int:
        return os.path.getsize(url)

    def read(self, url: str) -> bytes:      # no token: hashing every image read was 10 % of a job
        with open(url, "rb") as f:
            return f.read()

    def read_versioned(self, url: str) -> tuple[bytes, str]:
        data = self.read(url)
        return data, local_token(data)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        with open(url, "rb") as f:
            f.seek(start)
            return f.read(max(0, end - start))

    def list(self, prefix_url: str) -> Iterator[tuple[str, int]]:
        for root, _, files in os.walk(prefix_url):
            for name in sorted(files):
                path = os.path.join(root, name)
                yield path, os.path.getsize(path)

    def stamps(self, prefix_url: str) -> Iterator[tuple[str, int, str]]:
        for path, size in self.list(prefix_url):
            yield path, size, self.stamp(path)

    def stamp(self, url: str) -> str:
        info = os.stat(url)
        return f"{info.st_size}:{info.st_mtime_ns}"

    def list_children(self, prefix_url: str) -> Iterator[tuple[str, int | None]]:
        for entry in sorted(os.scandir(prefix_url), key=lambda e: e.name):
            yield (entry.path, None) if entry.is_dir() else (entry.path, entry.stat().st_size)

    def download(self, url: str, local_path: str) -> None:
        shutil.copyfile(url, local_path)

    def upload(self, local_path: str, url: str) -> None:
        os.makedirs(os.path.dirname(url) or ".", exist_ok=True)
        tmp = url + ".partial"
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, url)

    @contextlib.contextmanager
    def writing(self, url: str):
        """Beside the target (one partial name per writer thread), renamed once complete."""
        path = f"{url}.{os.getpid()}-{threading.get_ident()}.partial"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            yield path
            os.replace(path, url)
        finally:
            if os.path.exists(path):
                os.remove(path)

    def write(self, url: str, data: bytes, if_none_match: bool = False,
              if_match: str | None = None) -> str:
        token = write_local(url, data, if_none_match, if_match)
        if token is None:
            raise WriteConflict(f"write {url}: changed by someone else meanwhile")
        return token

    def delete(self, url: str, if_match: str | None = None) -> None:
        if if_match is not None:
            if not delete_local(url, if_match):
                raise WriteConflict(f"delete {url}: changed or deleted by someone else meanwhile")
        elif os.path.isdir(url):
            shutil.rmtree(url, ignore_errors=True)
        elif os.path.exists(url):
            os.remove(url)

    def delete_prefix(self, prefix_url: str) -> None:
        self.delete(prefix_url)

    def move(self, src: str, dst: str) -> None:
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        os.replace(src, dst)
