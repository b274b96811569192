"""Writing the shards: each candidate gets a shard index from a hash of its id, the (small)
candidates are grouped by shard, and each shard's writer reads its own images.

Image bytes from S3 or disk never go through a shuffle: rows carry URLs, so a cluster's shuffle
moves ids, not pixels. (Rows from Cassandra carry their bytes inline. On this machine's
DirectRunner the two designs measured about the same speed: README, "Benchmarks".)

What crosses the shuffle is a bundle's candidates batched by shard (KeyByShard), not one element
per image: each element that crosses a step boundary is encoded, handed to the runner, grouped
and decoded on its own. (Measured here: a small gain, about 2 % of the job's CPU at 40,000 small
images, since encoding a candidate costs ~10 us; README, "Benchmarks".)
"""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import decode_budget, images, progress, sharding
from pipeline.dataset import naming, quarantine
from pipeline.dataset.backends.s3_faults import backoff
from pipeline.dataset.storage import Storage, StorageError, TransientStorageError
from pipeline.elements import Candidate, LabelSpace
from pipeline.shard_file import ShardBuilder
from pipeline.sources.rows import QUARANTINE

HASHES = "hashes"
BATCH = 500           # candidates per element at most, so one element stays small
# A shard whose reads or upload kept failing on a transient fault (after the store's own
# retries) is written again, whole, inside the step: the DirectRunner never retries a bundle,
# and on runners that do (Flink, Dataflow) writing a shard twice gives the same bytes.
SHARD_ATTEMPTS = 3
log = logging.getLogger("pipeline")


def size_of(candidate: Candidate) -> tuple[str, tuple[int, int]]:
    return candidate.split, (1, candidate.size)


def shard_key(candidate: Candidate, shard_counts: dict[str, int]) -> tuple[str, int, int]:
    shards = shard_counts[candidate.split]
    return candidate.split, sharding.shard_index(candidate.id, shards), shards


class KeyByShard(beam.DoFn):
    """Candidate -> ((split, index, shards), [Candidate]): a bundle's candidates batched by the
    shard they go to, at most BATCH per element (WriteShard reads them in id order whatever the
    batches were)."""

    def start_bundle(self):
        self.batches: dict[tuple, list[Candidate]] = {}

    def process(self, candidate: Candidate, shard_counts: dict[str, int]):
        key = shard_key(candidate, shard_counts)
        batch = self.batches.setdefault(key, [])
        batch.append(candidate)
        if len(batch) >= BATCH:
            yield key, self.batches.pop(key)

    def finish_bundle(self):
        for key, batch in self.batches.items():
            yield WindowedValue((key, batch), GlobalWindow().max_timestamp(), [GlobalWindow()])   # as BatchElements


class WriteShard(beam.DoFn):
    """((split, index, shards), [[Candidate]]) -> one TFRecord file in the staging dir, its ShardInfo.

    Reads the shard's images (a thread pool: object stores are latency bound), validates and
    normalises them, and writes them sorted by id, so the same input gives byte-identical files.
    Side outputs: quarantine entries, and (content sha256, (id, source, file)) for the dedupe."""

    def __init__(self, storage: Storage, staging_url: str, name: str, max_pixels: int,
                 channels: int = 0, size: tuple[int, int] | None = None, fetch_threads: int = 16,
                 orientation: bool = True, worker_memory: int = decode_budget.DEFAULT_WORKER_MEMORY_GB * 2**30,
                 span: str | None = None, index: bool = True):
        self.storage, self.staging_url, self.name = storage, staging_url, name
        self.span, self.index = span, index           # the index file beside each shard
        self.max_pixels, self.channels, self.size = max_pixels, channels, size
        self.fetch_threads, self.orientation, self.worker_memory = fetch_threads, orientation, int(worker_memory)
        self.written = Metrics.counter("ingest", "images_written")
        self.bad = Metrics.counter("ingest", "quarantined_images")
        self.retried = Metrics.counter("ingest", "shards_written_again")

    def setup(self):
        self.pool = ThreadPoolExecutor(self.fetch_threads)
        self.progress = progress.Counter(self.storage, self.staging_url)   # the launcher's line

    def teardown(self):
        self.pool.shutdown(wait=False)

    def process(self, element, space: LabelSpace):
        (split, index, shards), _ = element
        for attempt in range(SHARD_ATTEMPTS):
            try:
                outputs = self._write(element, space, first_try=attempt == 0)
                break
            except TransientStorageError as e:
                if attempt + 1 == SHARD_ATTEMPTS:
                    raise
                self.retried.inc()
                log.warning("shard %s %d-of-%d: %s; writing it again (try %d of %d)",
                            split, index, shards, e, attempt + 2, SHARD_ATTEMPTS)
                backoff(attempt + 2)
        yield from outputs

    def _write(self, element, space: LabelSpace, first_try: bool) -> list:
        """Everything one shard yields, its file written last (so a try that fails yields nothing)."""
        (split, index, shards), batches = element
        candidates = [candidate for batch in batches for candidate in batch]
        file_name = naming.shard_files(self.name, split).name(index, shards)
        shard, outputs = ShardBuilder(space, split, self.span, self.index), []
        for candidate, prepared, digest, problem in self._prepared(unique_ids(candidates, shard), first_try):
            if problem:
                outputs.append(beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(
                    candidate.id, candidate.source, problem)))
                continue
            shard.add(prepared, candidate.id, candidate.label, candidate.label_name, candidate.attributes,
                      candidate.source)
            outputs.append(beam.pvalue.TaggedOutput(HASHES, (digest, (candidate.id, candidate.source, file_name))))
        outputs += [beam.pvalue.TaggedOutput(QUARANTINE, entry) for entry in shard.duplicate_ids]
        info = shard.write(self.storage, self.staging_url, split, index, shards, file_name)
        bad = sum(1 for o in outputs if o.tag == QUARANTINE) - len(shard.duplicate_ids)
        self.written.inc(shard.count)
        self.bad.inc(bad)
        self.progress.add(quarantined=bad + len(shard.duplicate_ids), shards=1)
        return outputs + [info]

    def _prepared(self, candidates, count_progress: bool = True):
        """Yield (candidate, PreparedImage, sha256 of the source bytes, problem) in id order."""
        for start in range(0, len(candidates), 256):   # bounded memory: 256 images in flight
            yield from self.pool.map(self._prepare, candidates[start:start + 256])
            if count_progress:                          # a shard written again is read once
                self.progress.add(read=min(256, len(candidates) - start))

    def _prepare(self, candidate):
        try:
            data = candidate.image
            if data is None:
                data = self.storage.read_bytes(candidate.url, max_bytes=candidate.size)   # as listed
            prepared = images.prepare_image(data, self.max_pixels, self.channels, self.size, self.orientation,
                                            decode_budget.shared(self.worker_memory))   # per process
            return candidate, prepared, hashlib.sha256(data).hexdigest(), None
        except FileNotFoundError:
            return candidate, None, None, "no image: object vanished before it was read"
        except images.BadImage as e:
            return candidate, None, None, str(e)
        except StorageError:
            raise     # the store failing after every retry: never drop an image (process retries)
        except Exception as e:  # bytes PIL chokes on in a way it does not report as bad
            return candidate, None, None, f"unreadable object: {e}"


def unique_ids(candidates, shard: ShardBuilder) -> list[Candidate]:
    """Sort by id; a second row with an id already seen is a duplicate id, never a second record."""
    kept, seen = [], {}
    for c in sorted(candidates, key=lambda c: (c.id, c.source)):
        if c.id in seen:
            shard.duplicate_ids.append(quarantine.entry(
                c.id, c.source, f"duplicate id: also read from {seen[c.id]}"))
        else:
            seen[c.id] = c.source
            kept.append(c)
    return kept


def sum_pairs(pairs) -> tuple[int, int]:
    """(records, bytes) summed; safe on empty input and on partial sums (Beam re-combines them)."""
    records = size = 0
    for count, nbytes in pairs:
        records, size = records + count, size + nbytes
    return records, size


def shard_count(split_size, num_shards: int, num_readers: int, target_shard_bytes: int) -> tuple[str, int]:
    """(split, (records, bytes)) -> (split, its number of shards)."""
    split, (records, size) = split_size
    return split, num_shards or sharding.num_shards(records, size, num_readers, target_shard_bytes)


class WriteShards(beam.PTransform):
    """Candidates -> (ShardInfos, quarantine, content hashes (sha256, (id, source, file))).

    Shard counts per split come from the candidates' count and listed bytes (sharding.py)
    unless `num_shards` fixes them."""

    def __init__(self, writer: WriteShard, space, num_shards: int, num_readers: int,
                 target_shard_bytes: int):
        super().__init__()
        self.writer, self.space = writer, space
        self.num_shards, self.num_readers, self.target_shard_bytes = num_shards, num_readers, target_shard_bytes

    def expand(self, candidates):
        sizes = (candidates
                 | "SizeOf" >> beam.Map(size_of)                  # (split, (1, bytes))
                 | "SumPerSplit" >> beam.CombinePerKey(sum_pairs))  # (split, (records, bytes))
        _ = sizes | "NoteTotal" >> beam.Map(progress.note_total, self.writer.storage,
                                            self.writer.staging_url)   # the progress line's total
        shard_counts = sizes | "ShardCount" >> beam.Map(shard_count, self.num_shards, self.num_readers,
                                                        self.target_shard_bytes)   # (split, shards)
        written = (candidates
                   | "ShardKey" >> beam.ParDo(KeyByShard(), beam.pvalue.AsDict(shard_counts))
                   # ((split, index, shards), [Candidate])
                   | "GroupByShard" >> beam.GroupByKey()          # ids and URLs, never image bytes
                   | "WriteShard" >> beam.ParDo(self.writer, beam.pvalue.AsSingleton(self.space))
                   .with_outputs(QUARANTINE, HASHES, main="infos"))   # ShardInfo
        return written.infos, written[QUARANTINE], written[HASHES]
