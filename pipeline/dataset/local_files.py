"""Local files: the atomic (optionally conditional) write behind `Storage.write_bytes` for
local paths, the content token that condition compares, and a file's sha256."""
from __future__ import annotations

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


def write_local(path: str, data: bytes, if_none_match: bool, if_match: str | None) -> str | None:
    """Write beside the target and rename; conditional writes hold an flock on a sidecar file
    (`.<name>.lock`) while they compare and swap, so two writers on one host (or on a shared
    file system with working locks) cannot both win. Returns the new token, or None when the
    condition failed (nothing written)."""
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
    with open(os.path.join(directory, f".{os.path.basename(path)}.lock"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            with open(path, "rb") as f:
                current = local_token(f.read())
        except FileNotFoundError:
            current = None
        if (if_none_match and current is not None) or (if_match and current != if_match):
            os.remove(tmp)
            return None
        os.replace(tmp, path)
    return local_token(data)
