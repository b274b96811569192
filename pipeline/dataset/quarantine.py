"""Quarantine entries: one per input that did not become a record, with the reason why.

Entries are written to the dataset's quarantine.jsonl; the manifest counts them by kind, the
reason's text before its first colon ("corrupt image: ..." counts as "corrupt image")."""
from __future__ import annotations


def entry(record_id: str, source: str, reason: str) -> dict:
    return {"id": record_id, "source": source, "reason": reason}


def reason_kind(reason: str) -> str:
    """The reason without its detail, for counting: 'corrupt image: ...' -> 'corrupt image'."""
    return reason.split(":")[0]
