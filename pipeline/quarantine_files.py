"""The quarantine list as files the workers write: entries are hashed by id into
ceil(count / ENTRIES_PER_FILE) files, each sorted by (id, reason) and written into staging, so
no process ever holds the whole list (5 % bad of 10^9 images would be 50 M entries in one
side input). Publishing gets one small info per file: name, entry count, counts by reason."""
from __future__ import annotations

import collections
import json

import apache_beam as beam

from pipeline import sharding
from pipeline.dataset.naming import QUARANTINE_FILES
from pipeline.dataset.quarantine import reason_kind
from pipeline.dataset.storage import Storage, join
from pipeline.elements import QuarantineFileInfo

ENTRIES_PER_FILE = 200_000       # ~60 MB of JSON lines: what one writer holds at a time


def file_count(entries: int, per_file: int = ENTRIES_PER_FILE) -> int:
    return max(1, -(-entries // per_file))


def file_key(entry: dict, total: int, per_file: int) -> tuple[tuple[int, int], dict]:
    count = file_count(total, per_file)
    return (sharding.shard_index(entry["id"], count), count), entry


def jsonl(entries) -> str:
    return "".join(json.dumps(q, sort_keys=True) + "\n" for q in entries)


class WriteQuarantineFile(beam.DoFn):
    """((index, count), entries) -> its file in staging, and the file's QuarantineFileInfo."""

    def __init__(self, storage: Storage, staging_url: str):
        self.storage, self.staging_url = storage, staging_url

    def process(self, element):
        (index, count), entries = element
        entries = sorted(entries, key=lambda q: (q["id"], q["reason"], q["source"]))
        name = QUARANTINE_FILES.name(index, count)
        self.storage.write_text(join(self.staging_url, name), jsonl(entries))
        by_reason = collections.Counter(reason_kind(q["reason"]) for q in entries)
        yield QuarantineFileInfo(name, len(entries), dict(sorted(by_reason.items())))


class WriteQuarantine(beam.PTransform):
    """quarantine entries -> QuarantineFileInfos of the files they were written to (none when
    there are none)."""

    def __init__(self, storage: Storage, staging_url: str, per_file: int = ENTRIES_PER_FILE):
        super().__init__()
        self.storage, self.staging_url, self.per_file = storage, staging_url, per_file

    def expand(self, entries):
        total = entries | "Count" >> beam.combiners.Count.Globally()
        return (entries
                | "FileKey" >> beam.Map(file_key, beam.pvalue.AsSingleton(total), self.per_file)
                | "GroupByFile" >> beam.GroupByKey()
                | "WriteFile" >> beam.ParDo(WriteQuarantineFile(self.storage, self.staging_url)))


def summary(infos: list[QuarantineFileInfo]) -> dict:
    """The manifest's `quarantine`: the count, the counts by reason, the files (sorted)."""
    by_reason: collections.Counter = collections.Counter()
    for info in infos:
        by_reason.update(info.by_reason)
    return {"count": sum(i.entries for i in infos), "by_reason": dict(sorted(by_reason.items())),
            "files": sorted(i.file for i in infos)}
