"""Local files: the atomic (optionally conditional) write and the conditional delete behind the
local backend (backends/local.py), the content token those conditions compare, a file's sha256,
and a folder one process owns.

Durable as well as atomic: a file is fsynced before it is renamed into place and its folder
after (a new folder's entry in its parent too), and a commit write (a manifest, a COMMITTED
marker) fsyncs its folder before its rename as well, so that the files it names, moved or
written there before, are on disk before the marker that says they are complete."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile


class FolderInUse(Exception):
    """Another live process owns the folder; the message names it and its pid."""


def file_digest(path: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a local file, read in 1 MiB chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def local_token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def compared(path: str):
    """Hold an flock on a sidecar file (`.<name>.lock`) and yield the file's current token (None:
    no file), so two writers on one host (or on a shared file system with working locks) cannot
    both win a compare-and-swap."""
    directory = os.path.dirname(path) or "."
    with open(os.path.join(directory, f".{os.path.basename(path)}.lock"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            with open(path, "rb") as f:
                current = local_token(f.read())
        except FileNotFoundError:
            current = None
        yield current


def fsync_path(path: str, folder: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_folders(path: str) -> None:
    """os.makedirs(path), each folder it creates fsynced into its parent."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path) or "."
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:       # another writer made it meanwhile
            continue
        fsync_path(os.path.dirname(folder) or ".", folder=True)


def durable_replace(written: str, path: str) -> None:
    """Rename a written file into place so that a crash leaves the whole new file or the old
    one: its bytes on disk first, then the rename, then the folder entry."""
    fsync_path(written)
    os.replace(written, path)
    fsync_path(os.path.dirname(path) or ".", folder=True)


def write_local(path: str, data: bytes, if_none_match: bool, if_match: str | None) -> str | None:
    """Write beside the target and rename; a conditional write compares and swaps under the
    flock of `compared`. The folder is fsynced before the rename (what was put in it before is
    on disk before this file: it may be the commit that names them) and after. Returns the new
    token, or None when the condition failed (nothing written)."""
    directory = os.path.dirname(path) or "."
    durable_folders(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fsync_path(directory, folder=True)
    if not (if_none_match or if_match):
        os.replace(tmp, path)
        fsync_path(directory, folder=True)
        return local_token(data)
    with compared(path) as current:
        if (if_none_match and current is not None) or (if_match and current != if_match):
            os.remove(tmp)
            return None
        os.replace(tmp, path)
        fsync_path(directory, folder=True)
    return local_token(data)


def delete_local(path: str, if_match: str) -> bool:
    """Remove the file only if its token is still `if_match` (False: changed or gone)."""
    with compared(path) as current:
        if current != if_match:
            return False
        os.remove(path)
    return True


def own_folder(path: str) -> int:
    """Make `path` (created 0700) this process's own and empty it of what an earlier owner left:
    an flock on the sidecar `.<name>.owner` beside it (not in it: the folder holds only what its
    owner puts there), which holds the owner's pid, kept while the returned descriptor is open.
    The kernel drops the lock when its process ends, however it ends, so a crashed owner's
    folder is taken over and a live owner's never is (FolderInUse)."""
    path = os.path.abspath(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    sidecar = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.owner")
    fd = os.open(sidecar, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise FolderInUse(f"{path} is in use by process {owner} on this host (another reader or "
                          "job with the same folder); give each its own") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    for entry in os.scandir(path):          # left by an owner that is gone
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.remove(entry.path)
    return fd
