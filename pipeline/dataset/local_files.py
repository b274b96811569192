"""Local files: the atomic (optionally conditional) write and the conditional delete behind the
local backend (backends/local.py), the content token those conditions compare, and a file's
sha256."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile


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


def write_local(path: str, data: bytes, if_none_match: bool, if_match: str | None) -> str | None:
    """Write beside the target and rename; a conditional write compares and swaps under the
    flock of `compared`. Returns the new token, or None when the condition failed (nothing
    written)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if not (if_none_match or if_match):
        os.replace(tmp, path)
        return local_token(data)
    with compared(path) as current:
        if (if_none_match and current is not None) or (if_match and current != if_match):
            os.remove(tmp)
            return None
        os.replace(tmp, path)
    return local_token(data)


def delete_local(path: str, if_match: str) -> bool:
    """Remove the file only if its token is still `if_match` (False: changed or gone)."""
    with compared(path) as current:
        if current != if_match:
            return False
        os.remove(path)
    return True
