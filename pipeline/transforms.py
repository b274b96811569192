"""The ingestion job's steps as small DoFns, each testable on a few elements.

Image bytes from S3 or disk never go through a shuffle: rows carry URLs, the (small) candidates
are grouped by shard, and each shard's writer reads its own images, so a cluster's shuffle moves
ids, not pixels. (Rows from Cassandra carry their bytes inline. On this machine's DirectRunner the
two designs measured about the same speed: README, "Benchmarks".)
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import images, records, sharding, tfrecord
from pipeline.manifest import SPLITS
from pipeline.splits import assign_split
from pipeline.storage import Storage, StorageError, join

QUARANTINE = "quarantine"
HASHES = "hashes"
log = logging.getLogger("pipeline")


def quarantine_entry(record_id: str, source: str, reason: str) -> dict:
    return {"id": record_id, "source": source, "reason": reason}


def reason_kind(reason: str) -> str:
    """The reason without its detail, for counting: 'corrupt image: ...' -> 'corrupt image'."""
    return reason.split(":")[0]


class CheckRow(beam.DoFn):
    """A row -> a candidate record (label indices, split), or a quarantine entry saying why not.

    `space` is the label space: {"classes": [...], "primary": attribute or None,
    "attributes": {attribute: [classes]}}."""

    def __init__(self, ratios: dict[str, float]):
        self.ratios = ratios
        self.bad = Metrics.counter("ingest", "quarantined_rows")

    def process(self, row, space):
        try:
            label_name, attributes = self._labels(row, space)
            split = row["split"] or assign_split(row["id"], self.ratios)
            if split not in SPLITS:
                raise ValueError(f"unknown split: {split!r} (use {', '.join(SPLITS)})")
            if row["image"] is not None and not row["image"]:
                raise ValueError("empty image: the image column is null or empty")
        except ValueError as e:
            self.bad.inc()
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine_entry(row["id"], row["source"], str(e)))
            return
        yield dict(row, split=split, label=space["classes"].index(label_name),
                   label_name=label_name, attributes=attributes)

    @staticmethod
    def _labels(row, space) -> tuple[str, dict[str, int]]:
        if space["primary"]:
            values = row["attributes"]
            if space["primary"] not in values:
                raise ValueError(f"missing label: no attribute {space['primary']!r} in its file")
            return str(values[space["primary"]][0]), {a: v for a, (v, _) in values.items()}
        label = row["label"]
        if not label:
            raise ValueError("missing label: the row has no label")
        if label not in space["classes"]:
            raise ValueError(f"unknown label: {label!r} is not in the class list")
        return label, {}


def size_of(candidate) -> tuple[str, tuple[int, int]]:
    return candidate["split"], (1, candidate["size"])


def shard_key(candidate, shard_counts):
    shards = shard_counts[candidate["split"]]
    return (candidate["split"], sharding.shard_index(candidate["id"], shards), shards), candidate


class WriteShard(beam.DoFn):
    """((split, index, shards), candidates) -> one TFRecord file in the staging dir + its stats.

    Reads the shard's images (a thread pool: object stores are latency bound), validates and
    normalises them, and writes them sorted by id, so the same input gives byte-identical files.
    Side outputs: quarantine entries, and (content sha256, (id, source, file)) for the dedupe."""

    def __init__(self, storage: Storage, staging_url: str, name: str, max_pixels: int,
                 channels: int = 0, size: tuple[int, int] | None = None, fetch_threads: int = 16):
        self.storage, self.staging_url, self.name = storage, staging_url, name
        self.max_pixels, self.channels, self.size = max_pixels, channels, size
        self.fetch_threads = fetch_threads
        self.written = Metrics.counter("ingest", "images_written")
        self.bad = Metrics.counter("ingest", "quarantined_images")

    def setup(self):
        self.pool = ThreadPoolExecutor(self.fetch_threads)
        self.seen, self.started, self.last_log = 0, time.monotonic(), time.monotonic()

    def teardown(self):
        self.pool.shutdown(wait=False)

    def process(self, element, space):
        (split, index, shards), candidates = element
        file_name = sharding.shard_name(self.name, split, index, shards)
        shard = ShardBuilder(space)
        for candidate, prepared, digest, problem in self._prepared(unique_ids(candidates, shard)):
            if problem:
                self.bad.inc()
                yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine_entry(
                    candidate["id"], candidate["source"], problem))
                continue
            shard.add(candidate, prepared)
            yield beam.pvalue.TaggedOutput(HASHES, (digest, (candidate["id"], candidate["source"], file_name)))
        for entry in shard.duplicate_ids:
            yield beam.pvalue.TaggedOutput(QUARANTINE, entry)
        self.written.inc(shard.count)
        yield shard.write(self.storage, join(self.staging_url, file_name),
                          split=split, index=index, shards=shards, file=file_name)

    def _prepared(self, candidates):
        """Yield (candidate, PreparedImage, sha256 of the source bytes, problem) in id order."""
        for start in range(0, len(candidates), 256):   # bounded memory: 256 images in flight
            yield from self.pool.map(self._prepare, candidates[start:start + 256])
            self._progress(min(256, len(candidates) - start))

    def _prepare(self, candidate):
        try:
            data = candidate["image"]
            if data is None:
                data = self.storage.read_bytes(candidate["url"])
            prepared = images.prepare_image(data, self.max_pixels, self.channels, self.size)
            return candidate, prepared, hashlib.sha256(data).hexdigest(), None
        except FileNotFoundError:
            return candidate, None, None, "no image: object vanished before it was read"
        except images.BadImage as e:
            return candidate, None, None, str(e)
        except StorageError:
            raise     # the store failing after boto's retries: fail the job, never drop images
        except Exception as e:  # bytes PIL chokes on in a way it does not report as bad
            return candidate, None, None, f"unreadable object: {e}"

    def _progress(self, n: int):
        self.seen += n
        now = time.monotonic()
        if now - self.last_log >= 10:
            self.last_log = now
            rate = self.seen / (now - self.started)
            log.warning("worker %d: %d images read (%.0f images/s)", os.getpid(), self.seen, rate)


def unique_ids(candidates, shard: "ShardBuilder") -> list[dict]:
    """Sort by id; a second row with an id already seen is a duplicate id, never a second record."""
    kept, seen = [], {}
    for c in sorted(candidates, key=lambda c: (c["id"], c["source"])):
        if c["id"] in seen:
            shard.duplicate_ids.append(quarantine_entry(
                c["id"], c["source"], f"duplicate id: also read from {seen[c['id']]}"))
        else:
            seen[c["id"]] = c["source"]
            kept.append(c)
    return kept


class ShardBuilder:
    """Accumulates one shard's examples, label counts and pixel sums."""

    def __init__(self, space: dict):
        self.space = space
        self.examples: list[bytes] = []
        self.class_counts = [0] * len(space["classes"])
        self.attribute_counts = {a: [0] * len(c) for a, c in space["attributes"].items()}
        self.shapes: set[tuple[int, int, int]] = set()
        self.stats: dict[int, list] = {}          # channels -> [pixels, sums, squared sums]
        self.duplicate_ids: list[dict] = []

    @property
    def count(self) -> int:
        return len(self.examples)

    def add(self, candidate: dict, prepared: images.PreparedImage):
        info = prepared.info
        self.examples.append(records.encode_example(records.ImageRecord(
            id=candidate["id"], image=prepared.data, image_format=info.format,
            height=info.height, width=info.width, channels=info.channels,
            label=candidate["label"], label_name=candidate["label_name"],
            attributes=candidate["attributes"])))
        self.class_counts[candidate["label"]] += 1
        for attribute, value in candidate["attributes"].items():
            self.attribute_counts[attribute][value] += 1
        self.shapes.add((info.height, info.width, info.channels))
        acc = self.stats.setdefault(info.channels, [0, [0.0] * info.channels, [0.0] * info.channels])
        acc[0] += prepared.pixels
        acc[1] = [a + b for a, b in zip(acc[1], prepared.pixel_sum)]
        acc[2] = [a + b for a, b in zip(acc[2], prepared.pixel_sq_sum)]

    def write(self, storage: Storage, url: str, **info) -> dict:
        stats = {str(c): v for c, v in sorted(self.stats.items())}
        return write_shard_file(storage, url, self.examples, **info,
                                class_counts=self.class_counts,
                                attribute_counts=self.attribute_counts,
                                shapes=sorted(list(s) for s in self.shapes), pixel_stats=stats)


def write_shard_file(storage: Storage, url: str, examples: list[bytes], **info) -> dict:
    """Write examples as a TFRecord file (locally, then upload when the URL is remote)."""
    local_dir = None if not url.startswith("s3://") else tempfile.mkdtemp(prefix="shard-")
    path = url if local_dir is None else os.path.join(local_dir, "shard.tfrecord")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        tfrecord.write_records(f, examples)
    digest, size = file_digest(path)
    if local_dir is not None:
        storage.upload(path, url)
        os.remove(path)
        os.rmdir(local_dir)
    return dict(info, records=len(examples), bytes=size, sha256=digest)


def file_digest(path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
