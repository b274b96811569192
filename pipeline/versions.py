"""The versions of one published dataset: which is current, which are kept, which are retired.

The current version is the one `<output>/manifest.json` names. Every other folder
`<output>/v-<id>/` with a PUBLISHED.json was current once (the marker is written right after a
version's commit, and again, if a crash lost it, right before the commit that replaces it); the
newest `keep - 1` of them stay (a trainer that read their manifest before the switch finishes
its epochs on them), older ones are deleted. A flat dataset from before versioned publishing
counts as the oldest version: when it is first replaced, its manifest is kept as FLAT_MANIFEST
(its files stay where they are) until it is retired. Other folders were never committed (a
crashed or running publish): never touched, only named (`unfinished`).
"""
from __future__ import annotations

import json
import posixpath
import time

from pipeline.dataset.manifest import Manifest
from pipeline.dataset.naming import FLAT_MANIFEST, MANIFEST_NAME, PUBLISHED_NAME, is_version_folder
from pipeline.dataset.storage import Storage, join

DEFAULT_KEEP = 2


def current(storage: Storage, output_url: str) -> tuple[str | None, str | None]:
    """(text of the current manifest, its token for a conditional replace), or (None, None)."""
    try:
        data, token = storage.read_versioned(join(output_url, MANIFEST_NAME))
    except FileNotFoundError:
        return None, None
    return data.decode("utf-8"), token


def mark_published(storage: Storage, output_url: str, version: str) -> None:
    """Mark a committed version; the time orders the kept versions for retiring."""
    storage.write_text(join(output_url, version, PUBLISHED_NAME),
                       json.dumps({"version": version, "published_at": time.time()}))


def mark_replaced(storage: Storage, output_url: str, current_text: str) -> None:
    """Before the current version is replaced: make sure it is known as one that was current
    (a flat dataset: remember its manifest, so its files can be retired later)."""
    version = Manifest.from_json(current_text).version
    if version is None:
        storage.write_text(join(output_url, FLAT_MANIFEST), current_text)
    elif published_at(storage, output_url, version) is None:
        mark_published(storage, output_url, version)


def children(storage: Storage, output_url: str) -> list[str]:
    """Names of the version folders under the output (v-<id>)."""
    try:
        entries = list(storage.list_children(output_url))
    except (FileNotFoundError, NotADirectoryError):   # no output yet (or a file: preflight says so)
        return []
    return [posixpath.basename(url) for url, size in entries
            if size is None and is_version_folder(posixpath.basename(url))]


def published_at(storage: Storage, output_url: str, name: str) -> float | None:
    try:
        return json.loads(storage.read_text(join(output_url, name, PUBLISHED_NAME)))["published_at"]
    except FileNotFoundError:
        return None


def unfinished(storage: Storage, output_url: str) -> list[str]:
    """Version folders never committed: left by a crashed publish, or one running now."""
    text, _ = current(storage, output_url)
    live = Manifest.from_json(text).version if text else None
    return [join(output_url, name) for name in children(storage, output_url)
            if name != live and published_at(storage, output_url, name) is None]


def retire(storage: Storage, output_url: str, live: Manifest, keep: int) -> list[str]:
    """Delete the versions beyond the newest `keep` (the live one counted); returns their
    names. Never deletes a file the live manifest names."""
    dated = [(when, name) for name in children(storage, output_url) if name != live.version
             for when in [published_at(storage, output_url, name)] if when is not None]
    older = [name for _, name in sorted(dated, reverse=True)]
    flat = storage.exists(join(output_url, FLAT_MANIFEST))
    if flat:
        older.append(FLAT_MANIFEST)                    # always the oldest
    retired = older[max(keep - 1, 0):]
    protected = set(live.files())
    for name in retired:
        if name == FLAT_MANIFEST:
            retire_flat(storage, output_url, protected)
        elif not any(f.startswith(name + "/") for f in protected):
            retire_folder(storage, join(output_url, name))
    return retired


def retire_folder(storage: Storage, version_url: str) -> None:
    """Its manifest first (a reader pinned to it gets "no dataset", not missing shards), then
    the files, PUBLISHED.json last (a crash midway leaves it still listed for retiring)."""
    storage.delete(join(version_url, MANIFEST_NAME))
    for url, _ in list(storage.list(version_url)):
        if posixpath.basename(url) != PUBLISHED_NAME:
            storage.delete(url)
    storage.delete_prefix(version_url)


def retire_flat(storage: Storage, output_url: str, protected: set[str]) -> None:
    old = Manifest.from_json(storage.read_text(join(output_url, FLAT_MANIFEST)))
    for name in old.files():
        if name not in protected:
            storage.delete(join(output_url, name))
    storage.delete(join(output_url, FLAT_MANIFEST))
