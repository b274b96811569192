"""Every name the ingestion job and the dataset put in the store, built and parsed here only
(as TFDS's naming.ShardedFileTemplate): no other module knows a pattern.

    <output>/manifest.json                          MANIFEST_NAME: the commit point
    <output>/flat-manifest.json                     FLAT_MANIFEST: a replaced flat dataset's manifest
    <output>/v-<id>/                                version_folder(digest), is_version_folder(name)
    <output>/v-<id>/PUBLISHED.json                  PUBLISHED_NAME: the version was current once
    <output>/v-<id>/<name>-<split>.tfrecord-00003-of-00064     shard_files(name, split)
    <output>/v-<id>/quarantine-00000-of-00001.jsonl QUARANTINE_FILES (before: quarantine.jsonl)
    <output>/v-<id>/index-<split>-00003-of-00064.parquet      index_files(split): shard 3's records
    <output>/.staging-<run id>/                     staging_folder(run_id), is_staging_folder(name)
    <staging>/publish.json                          REQUEST_NAME: what the launcher commits
    <staging>/LEASE.json                            LEASE_NAME: until when the run is alive
    <staging>/progress/<writer id>.json             progress_file(writer_id), PROGRESS_FOLDER, is_progress_file(name)
    <staging>/deduped/<shard file>                  deduped(file): a shard rewritten without duplicates
    <output>/.probe-<run id>                        probe(run_id): the pre-flight write
    <output>/refused-<run id>/                      refused_folder(run_id): a refused run's quarantine

Names are relative: callers join them to a dataset or staging URL (storage.join).
"""
from __future__ import annotations

import dataclasses
import re

__all__ = ["DEDUPED", "FLAT_MANIFEST", "LEASE_NAME", "MANIFEST_NAME", "PROGRESS_FOLDER", "PUBLISHED_NAME",
           "QUARANTINE_FILES", "REQUEST_NAME", "ShardedFileTemplate", "deduped", "index_files", "is_progress_file",
           "is_staging_folder", "is_version_folder", "is_version_id", "probe", "progress_file", "refused_folder",
           "shard_files", "staging_folder", "version_folder"]

MANIFEST_NAME = "manifest.json"
FLAT_MANIFEST = "flat-manifest.json"
PUBLISHED_NAME = "PUBLISHED.json"
REQUEST_NAME = "publish.json"
LEASE_NAME = "LEASE.json"
PROGRESS_FOLDER = "progress"
VERSION_PREFIX = "v-"
VERSION_ID_CHARS = 16            # of the manifest's sha256: enough to never meet twice
STAGING_PREFIX = ".staging-"
DEDUPED = "deduped"


@dataclasses.dataclass(frozen=True)
class ShardedFileTemplate:
    """`<prefix>00003-of-00064<suffix>`: one family of files numbered index-of-count."""
    prefix: str
    suffix: str = ""

    def name(self, index: int, count: int) -> str:
        return f"{self.prefix}{index:05d}-of-{count:05d}{self.suffix}"

    def parse(self, name: str) -> tuple[int, int] | None:
        """(index, count) of a name of this family, or None for any other name."""
        match = re.fullmatch(re.escape(self.prefix) + r"(\d{5,})-of-(\d{5,})" + re.escape(self.suffix), name)
        return (int(match[1]), int(match[2])) if match else None


QUARANTINE_FILES = ShardedFileTemplate("quarantine-", ".jsonl")


def shard_files(dataset: str, split: str) -> ShardedFileTemplate:
    """The shard files of one split of a dataset: `<dataset>-<split>.tfrecord-00003-of-00064`."""
    return ShardedFileTemplate(f"{dataset}-{split}.tfrecord-")


def index_files(split: str) -> ShardedFileTemplate:
    """The index files of one split, one per shard and numbered as the shards are:
    `index-<split>-00003-of-00064.parquet` holds the records of shard 3 of 64."""
    return ShardedFileTemplate(f"index-{split}-", ".parquet")


def version_folder(manifest_sha256: str) -> str:
    """A version's folder, named by its manifest's content: `v-<first 16 hex digits>`."""
    return VERSION_PREFIX + manifest_sha256[:VERSION_ID_CHARS]


def is_version_folder(name: str) -> bool:
    return name.startswith(VERSION_PREFIX)


def is_version_id(name: str) -> bool:
    """Exactly `v-` and 16 hex digits: what a reader may be asked to pin (never a path)."""
    return re.fullmatch(re.escape(VERSION_PREFIX) + f"[0-9a-f]{{{VERSION_ID_CHARS}}}", name) is not None


def staging_folder(run_id: str) -> str:
    """Where one run's workers write (hidden, so listings of the output skip it)."""
    return STAGING_PREFIX + run_id


def is_staging_folder(name: str) -> bool:
    return name.startswith(STAGING_PREFIX)


def progress_file(writer_id: str) -> str:
    return f"{PROGRESS_FOLDER}/{writer_id}.json"


def is_progress_file(name: str) -> bool:
    """A writer's counters, not a temporary file being renamed into one (local disk's .tmp-*)."""
    return name.endswith(".json") and not name.startswith(".")


def deduped(shard_file: str) -> str:
    """The staged copy of a shard rewritten without its duplicates (never the writer's file)."""
    return f"{DEDUPED}/{shard_file}"


def probe(run_id: str) -> str:
    return f".probe-{run_id}"


def refused_folder(run_id: str) -> str:
    return f"refused-{run_id}"
