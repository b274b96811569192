"""The ingestion job's steps as small PTransforms/DoFns, each testable on a few elements."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import images, records, sharding
from pipeline.manifest import SPLITS
from pipeline.splits import assign_split
from pipeline.storage import Storage, join

QUARANTINE = "quarantine"
log = logging.getLogger("pipeline")


def quarantine_entry(record_id: str, source: str, reason: str) -> dict:
    return {"id": record_id, "source": source, "reason": reason}


def reason_kind(reason: str) -> str:
    """The reason without its detail, for counting: 'corrupt image: ...' -> 'corrupt image'."""
    return reason.split(":")[0]


class ResolveLabel(beam.DoFn):
    """(key, {images, labels}) -> a candidate record, or a quarantine entry saying what is wrong."""

    def __init__(self, ratios: dict[str, float]):
        self.ratios = ratios
        self.bad = Metrics.counter("ingest", "quarantined_labels")

    def process(self, element, classes):
        key, grouped = element
        found, rows = list(grouped["images"]), list(grouped["labels"])
        source = found[0][0] if found else key
        problem = self._problem(found, rows, classes)
        if problem:
            self.bad.inc()
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine_entry(key, source, problem))
            return
        row = rows[0]
        split = row["split"] or assign_split(key, self.ratios)
        yield {"id": key, "url": source, "label": classes.index(row["label"]),
               "label_name": row["label"], "split": split}

    @staticmethod
    def _problem(found, rows, classes) -> str | None:
        if not found:
            return "no image: the labels file names an object that does not exist"
        if not rows:
            return "missing label: the image has no row in the labels file"
        if len({(r["label"], r["split"]) for r in rows}) > 1:
            return f"conflicting labels: {sorted({r['label'] for r in rows})}"
        label, split = rows[0]["label"], rows[0]["split"]
        if not label:
            return "missing label: empty label in the labels file"
        if label not in classes:
            return f"unknown label: {label!r} is not in the class list"
        if split and split not in SPLITS:
            return f"unknown split: {split!r} (use {', '.join(SPLITS)})"
        return None


class FetchAndValidate(beam.DoFn):
    """A batch of candidates -> (split, id, serialized Example, label, shape) per good image.

    Objects are fetched by a thread pool: object stores are latency bound, so one request at a
    time per worker would leave the network idle."""

    def __init__(self, storage: Storage, max_pixels: int, fetch_threads: int = 16):
        self.storage, self.max_pixels, self.fetch_threads = storage, max_pixels, fetch_threads
        self.read = Metrics.counter("ingest", "images_written")
        self.bad = Metrics.counter("ingest", "quarantined_images")
        self.bytes = Metrics.counter("ingest", "image_bytes")

    def setup(self):
        self.pool = ThreadPoolExecutor(self.fetch_threads)
        self.seen, self.started, self.last_log = 0, time.monotonic(), time.monotonic()

    def teardown(self):
        self.pool.shutdown(wait=False)

    def _fetch(self, candidate):
        try:
            return candidate, self.storage.read_bytes(candidate["url"]), None
        except FileNotFoundError:
            return candidate, None, "no image: object vanished before it was read"
        except Exception as e:  # an unreadable object must not kill the job
            return candidate, None, f"unreadable object: {e}"

    def process(self, batch):
        for candidate, data, error in self.pool.map(self._fetch, batch):
            try:
                if error:
                    raise images.BadImage(error)
                info = images.inspect_image(data, self.max_pixels)
            except images.BadImage as e:
                self.bad.inc()
                yield beam.pvalue.TaggedOutput(
                    QUARANTINE, quarantine_entry(candidate["id"], candidate["url"], str(e)))
                continue
            self.read.inc()
            self.bytes.inc(len(data))
            example = records.encode_example(records.ImageRecord(
                id=candidate["id"], image=data, image_format=info.format, height=info.height,
                width=info.width, channels=info.channels, label=candidate["label"],
                label_name=candidate["label_name"]))
            yield (candidate["split"], candidate["id"], example, candidate["label"],
                   (info.height, info.width, info.channels))
        self._progress(len(batch))

    def _progress(self, n: int):
        self.seen += n
        now = time.monotonic()
        if now - self.last_log >= 10:
            self.last_log = now
            rate = self.seen / (now - self.started)
            log.warning("worker %d: %d images read (%.0f images/s)", os.getpid(), self.seen, rate)


def shard_key(example, shard_counts):
    split, record_id = example[0], example[1]
    shards = shard_counts[split]
    return (split, sharding.shard_index(record_id, shards), shards), example[1:]


class WriteShard(beam.DoFn):
    """((split, index, shards), examples) -> one TFRecord file in the staging dir + its stats.

    Records are sorted by id inside a shard, so the same input gives byte-identical files."""

    def __init__(self, storage: Storage, staging_url: str, name: str):
        self.storage, self.staging_url, self.name = storage, staging_url, name

    def process(self, element, classes):
        (split, index, shards), items = element
        items = sorted(items, key=lambda item: item[0])
        file_name = sharding.shard_name(self.name, split, index, shards)
        yield write_shard_file(self.storage, join(self.staging_url, file_name),
                               [example for _, example, _, _ in items],
                               [label for _, _, label, _ in items], len(classes),
                               split=split, index=index, shards=shards, file=file_name,
                               shapes=sorted({shape for *_, shape in items}))


def write_shard_file(storage: Storage, url: str, examples: list[bytes], labels: list[int],
                     num_classes: int, **info) -> dict:
    """Write examples as a TFRecord file (locally, then upload when the URL is remote)."""
    import tensorflow as tf

    local_dir = None if not url.startswith("s3://") else tempfile.mkdtemp(prefix="shard-")
    path = url if local_dir is None else os.path.join(local_dir, "shard.tfrecord")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            writer.write(example)
    digest, size = file_digest(path)
    if local_dir is not None:
        storage.upload(path, url)
        os.remove(path)
        os.rmdir(local_dir)
    counts = [0] * num_classes
    for label in labels:
        counts[label] += 1
    return dict(info, records=len(examples), bytes=size, sha256=digest, class_counts=counts,
                shapes=[list(s) for s in info.get("shapes", [])])


def file_digest(path: str) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
