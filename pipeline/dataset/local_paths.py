"""Local paths made from remote names, and the per-user cache they live in.

Object keys and the file names a manifest lists come from a bucket, whose writers this process
does not control: a key `model/../../../home/u/.bashrc` must never become a path outside the
folder it is downloaded into. Every place that turns a remote name into a local path goes
through `path_under`. Caches default to a per-user folder created 0700, never a predictable
shared folder in /tmp that another local user could read or plant files in.
"""
from __future__ import annotations

import os

__all__ = ["UnsafeName", "key_problem", "path_under", "private_dir", "relative_key", "user_cache_dir"]

APP = "image-classifier-pipeline"


class UnsafeName(ValueError):
    """A remote name that would leave its local folder (absolute, `..`, empty or NUL)."""


def key_problem(name: str) -> str | None:
    """Why a remote relative name is not one plain path (None: it is). S3 keeps `a//b`, `a/./b`,
    `a/../b` and `a/` as keys of their own, a file system or another store (SeaweedFS) would not:
    such names are refused in one place, here, never quietly normalised into another name."""
    if not name or "\0" in name or name.startswith("/") or "\\" in name:
        return "not a plain relative path (empty, absolute, NUL or backslash)"
    if name.endswith("/"):
        return "ends with / (a folder marker, not a file)"
    parts = name.split("/")
    if "" in parts:
        return "holds // (an empty path segment)"
    if any(part in ("..", ".") for part in parts):
        return "holds a . or .. segment"
    return None


def path_under(root: str, name: str) -> str:
    """root/name for a remote relative name, refused if it would land outside `root`."""
    problem = key_problem(name)
    if problem:
        raise UnsafeName(f"refusing remote name {name!r}: {problem}")
    path = os.path.join(root, *name.split("/"))
    real_root = os.path.realpath(root)
    if os.path.commonpath([os.path.realpath(path), real_root]) != real_root:   # through a symlink
        raise UnsafeName(f"refusing remote name {name!r}: it resolves outside {root}")
    return path


def relative_key(prefix_url: str, url: str) -> str:
    """The part of `url` below `prefix_url` (both s3:// URLs or both local paths)."""
    prefix = prefix_url.rstrip("/") + "/"
    if not url.startswith(prefix):
        raise UnsafeName(f"{url} is not under {prefix_url}")
    return url[len(prefix):]


def user_cache_dir(*parts: str) -> str:
    """$XDG_CACHE_HOME (or ~/.cache)/image-classifier-pipeline/<parts>, created 0700."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return private_dir(os.path.join(base, APP, *parts))


def private_dir(path: str) -> str:
    """`path`, created if missing and made 0700: what is below it is this user's alone, even
    under a folder others can read (a --cache-dir in /tmp)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)             # makedirs' mode is masked by the umask
    return path
