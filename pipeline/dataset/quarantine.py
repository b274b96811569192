"""Quarantine entries: one per input that did not become a record, with the reason why.

Entries are written to the dataset's quarantine files (pipeline/quarantine_files.py); the
manifest lists the files and counts the entries by kind, the reason's text before its first
colon ("corrupt image: ..." counts as "corrupt image")."""
from __future__ import annotations

import json

from pipeline.dataset.storage import join


def entry(record_id: str, source: str, reason: str) -> dict:
    return {"id": record_id, "source": source, "reason": reason}


def reason_kind(reason: str) -> str:
    """The reason without its detail, for counting: 'corrupt image: ...' -> 'corrupt image'."""
    return reason.split(":")[0]


def files(quarantine: dict) -> list[str]:
    """A manifest's quarantine files, relative to the dataset: `files` (the job writes one or
    more), or `file` (a single quarantine.jsonl, in manifests before the files were sharded)."""
    if quarantine.get("files") is not None:
        return list(quarantine["files"])
    return [quarantine["file"]] if quarantine.get("file") else []


def read_entries(storage, dataset_url: str, quarantine: dict):
    """Every entry of a manifest's quarantine, file by file (never all files at once)."""
    for name in files(quarantine):
        for line in storage.read_text(join(dataset_url, name)).splitlines():
            if line.strip():
                yield json.loads(line)
