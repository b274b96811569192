"""Local paths: a file system on this machine, or one every worker mounts at the same path.

A listing yields regular files only, looked at without following links (lstat): a FIFO would
hang its reader forever, a device such as /dev/zero never ends, and a symlink can lead anywhere
the job may read (/etc/shadow when it runs as root). A symlink is followed only to a regular
file inside the folder being listed; a symlink to a folder is not followed. What is left out is
told to the caller's `skipped` list with the reason, for the quarantine. Reads open without
blocking and refuse what is not a regular file (what a listed name became since)."""
from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import stat
import threading
from typing import Iterator

from pipeline.dataset.backends.base import Backend, WriteConflict
from pipeline.dataset.local_files import delete_local, durable_folders, durable_replace, local_token, write_local


class LocalBackend(Backend):
    """Writes are atomic (written beside the target, then renamed) and durable (fsynced, and
    their folders: local_files.py); conditional ones compare the content's sha256 under an
    flock. A move is a rename only: the commit that follows it fsyncs the folder it lands in."""

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
        with open_regular(url) as f:
            return f.read()

    def read_versioned(self, url: str) -> tuple[bytes, str]:
        data = self.read(url)
        return data, local_token(data)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        with open_regular(url) as f:
            f.seek(start)
            return f.read(max(0, end - start))

    def list(self, prefix_url: str, skipped: list | None = None) -> Iterator[tuple[str, int]]:
        root = os.path.realpath(prefix_url)
        folders = [prefix_url] if os.path.isdir(prefix_url) else []
        while folders:
            folder = folders.pop()
            found = []
            for entry, size in entries(folder, root, skipped):
                if size is None:
                    found.append(entry.path)
                else:
                    yield entry.path, size
            folders.extend(sorted(found, reverse=True))     # depth first, in name order

    def stamps(self, prefix_url: str) -> Iterator[tuple[str, int, str]]:
        for path, size in self.list(prefix_url):
            yield path, size, self.stamp(path)

    def stamp(self, url: str) -> str:
        info = os.stat(url)
        return f"{info.st_size}:{info.st_mtime_ns}"

    def list_children(self, prefix_url: str, skipped: list | None = None) -> Iterator[tuple[str, int | None]]:
        root = os.path.realpath(prefix_url)
        for entry, size in entries(prefix_url, root, skipped):
            yield entry.path, size

    def download(self, url: str, local_path: str) -> None:
        shutil.copyfile(url, local_path)

    def upload(self, local_path: str, url: str) -> None:
        durable_folders(os.path.dirname(url) or ".")
        tmp = url + ".partial"
        shutil.copyfile(local_path, tmp)
        durable_replace(tmp, url)

    @contextlib.contextmanager
    def writing(self, url: str):
        """Beside the target (one partial name per writer thread), renamed once complete."""
        path = f"{url}.{os.getpid()}-{threading.get_ident()}.partial"
        durable_folders(os.path.dirname(path) or ".")
        try:
            yield path
            durable_replace(path, url)
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
        durable_folders(os.path.dirname(dst) or ".")
        os.replace(src, dst)


def entries(folder: str, root: str, skipped: list | None):
    """(entry, size) per regular file in `folder` (a symlink: to a regular file under `root`),
    (entry, None) per real folder, in name order; each entry left out is appended to `skipped`
    as (path, reason)."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                yield entry, None
            elif stat.S_ISREG(mode):
                yield entry, entry.stat(follow_symlinks=False).st_size
            elif stat.S_ISLNK(mode):
                yield entry, linked_size(entry.path, root)
            else:
                raise SkippedEntry(f"not a regular file ({kind(mode)})")
        except SkippedEntry as e:
            if skipped is not None:
                skipped.append((entry.path, str(e)))
        except FileNotFoundError:
            continue                   # removed while listed


class SkippedEntry(Exception):
    """Why a listed entry is not a file to read."""


def linked_size(path: str, root: str) -> int:
    """The size of the regular file a symlink leads to, if it lies under `root`."""
    target = os.path.realpath(path)
    if os.path.commonpath([target, root]) != root:
        raise SkippedEntry(f"a symlink to {target}, outside the folder listed ({root}): not followed")
    try:
        mode = os.stat(target)
    except OSError:
        raise SkippedEntry("a symlink that leads nowhere") from None
    if stat.S_ISDIR(mode.st_mode):
        raise SkippedEntry("a symlink to a folder: not followed")
    if not stat.S_ISREG(mode.st_mode):
        raise SkippedEntry(f"a symlink to {target}, not a regular file ({kind(mode.st_mode)})")
    return mode.st_size


def kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


@contextlib.contextmanager
def open_regular(path: str):
    """Open for reading without blocking (a FIFO would wait for a writer forever), then refuse
    anything but a regular file. A path under a file does not exist, as os.path.exists says: the
    callers that treat a missing file as absent (a first run's manifest) treat it so too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except NotADirectoryError as e:
        raise FileNotFoundError(errno.ENOENT, "no such file (a parent is a file)", path) from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{path}: not a regular file ({'a folder' if stat.S_ISDIR(mode) else kind(mode)}); "
                          "not read")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f
