"""tf.data input for one Horovod rank.

Images of one size that fit in memory (the common case for small images): decoded once, in
batches, before the first step (trainer/input/in_memory.py); then per epoch an order fixed by (seed,
epoch), cut or cycled to steps x batch -> gather a batch by index -> augment the whole batch
(trainer/input/augment.py) -> to float, standardise -> prefetch.

Otherwise: files (manifest) -> this rank's files, fetched as they are read and sha256-checked
(pipeline/dataset/shard_cache.py) -> read one after another (pipeline/dataset/load.py) -> parse +
decode (parallel map, in a fixed order) -> [cache] -> per epoch: shuffle by (seed, epoch), cut
to steps x batch -> batch -> augment -> to float, standardise -> prefetch. Photos of many sizes
(pipeline/dataset/crops.py) are cached and shuffled still encoded, and each one is decoded
inside its random-resized crop before batching."""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from pipeline.dataset.load import decoded, encoded_records, record_ids
from pipeline.dataset.manifest import Manifest
from pipeline.dataset.reader import RankShare
from pipeline.dataset.crops import ResizeCrop
from trainer.input.augment import Augmentation
from trainer.input.in_memory import DecodedImages

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 2 * 2**30     # decoded images of one rank kept in memory below this
# Shuffle buffer when the images are not cached: at most 10,000 images and this many bytes. The
# buffer fills before the first batch, so this also bounds what is read before training starts.
SHUFFLE_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """What one rank reads in every epoch: all its records in an order fixed by (seed, epoch),
    cut or cycled to exactly steps x batch_size records. So every rank takes the same number of
    steps whatever its shard sizes, and a run resumed at (epoch, batch) reads exactly what the
    interrupted run would have read from there on: nothing repeated, nothing skipped. (The
    shuffles also depend on TensorFlow's global seed, which train() sets before anything else.)"""
    steps: int
    batch_size: int
    seed: int
    buffer: int          # shuffle buffer: all of the rank's records when they fit in memory
    cached: bool = True  # they fit, and are kept in memory after the first epoch
    in_memory: bool = False   # images of one size that fit: decoded once, batches gathered by index

    def index_batches(self, count: int, start: tuple[int, int] = (0, 0)) -> tf.data.Dataset:
        """(epoch, batch, indices into `count` records) from (epoch, batch) = `start` on: the
        in-memory order, one permutation per epoch drawn from (seed, epoch), cycled."""
        per_epoch = tf.range(self.batch_size, dtype=tf.int64)

        def one_epoch(epoch):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(count, dtype=tf.int64), tf.stack([tf.constant(self.seed, tf.int64), epoch]))
            return tf.data.Dataset.range(self.steps).map(
                lambda batch: (epoch, batch, tf.gather(order, (batch * self.batch_size + per_epoch) % count)))

        return tf.data.Dataset.range(start[0], 2**62).flat_map(one_epoch).skip(start[1])

    def stream(self, items, start_epoch: int = 0, start_batch: int = 0) -> tf.data.Dataset:
        """(epoch, index in epoch, item) from (start_epoch, start_batch) on, endless. `items`: a
        dataset, or a function of the epoch giving one (files read in a new order each epoch)."""
        per_epoch = self.steps * self.batch_size
        seed = tf.constant(self.seed, tf.int64)

        def one_epoch(epoch):
            source = items(epoch) if callable(items) else items
            order = source.shuffle(self.buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)
            return order.repeat().take(per_epoch).enumerate().map(lambda i, item: (epoch, i, item))

        epochs = tf.data.Dataset.range(start_epoch, 2**62)
        return epochs.flat_map(one_epoch).skip(start_batch * self.batch_size)


def batch_record_ids(files, shard_records, plan: EpochPlan, epoch: int, batch: int) -> list[str]:
    """The ids of the records in batch `batch` (0-based) of `epoch` on this rank."""
    if plan.in_memory:
        ids = list(record_ids(files, shard_records).as_numpy_iterator())
        _, _, indices = next(iter(plan.index_batches(len(ids), (epoch, batch))))
        return [ids[i].decode() for i in indices.numpy()]
    ids = per_epoch(files, plan, lambda e=-1: record_ids(files, shard_records, e, plan.seed))
    ds = plan.stream(ids, epoch, batch).take(plan.batch_size)
    return [item.decode() for _, _, item in ds.as_numpy_iterator()]


class Standardize:
    """uint8 -> float32: pixel/255, then (x - mean) / std per channel when the manifest has the
    training split's statistics (older manifests do not: plain /255 scaling then)."""

    def __init__(self, mean=None, std=None):
        self.mean = [float(m) for m in mean] if mean else None
        self.std = [max(float(s), 1e-3) for s in std] if std else None

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "Standardize":
        split = manifest.splits.get("train")
        return cls(getattr(split, "pixel_mean", None), getattr(split, "pixel_std", None))

    def scale(self, image):
        return tf.cast(image, tf.float32) / 255.0

    def center(self, image):
        if self.mean is None or self.std is None:
            return image
        return (image - tf.constant(self.mean)) / tf.constant(self.std)

    def __call__(self, image, label):
        return self.center(self.scale(image)), label

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std}


def epoch_plan(num_records: int, shape, *, steps: int, batch_size: int, seed: int,
               record_bytes: float | None = None, memory_limit: float = CACHE_LIMIT_BYTES) -> EpochPlan:
    """A full shuffle when this rank's images fit in `memory_limit` bytes (they are then cached):
    decoded images of `shape`, or, for photos, their encoded bytes (`record_bytes` each)."""
    item = record_bytes if record_bytes is not None else shape[0] * shape[1] * shape[2]
    fits = num_records * item <= memory_limit
    bounded = max(batch_size, int(SHUFFLE_BYTES // max(item, 1)))
    buffer = num_records if fits else min(num_records, 10_000, bounded)
    return EpochPlan(steps, batch_size, seed, max(1, buffer), cached=fits,
                     in_memory=fits and record_bytes is None)


def per_epoch(files, plan: EpochPlan, items):
    """`items` (a function of the epoch) when a rank's files are fetched as read and its images
    are not cached: each epoch then reads the files in its own order. Else one fixed dataset."""
    return items if isinstance(files, RankShare) and not plan.cached else items()


def training_dataset(files, shape, plan: EpochPlan, *, start: tuple[int, int] = (0, 0),
                     augmentation: Augmentation | None, threads: int, shard_records=None,
                     standardize: Standardize | None = None,
                     outputs: dict[str, str] | None = None,
                     sizing: ResizeCrop | None = None,
                     in_memory: DecodedImages | None = None) -> tf.data.Dataset:
    """Endless batches from (epoch, batch) = `start` on; the caller takes plan.steps per epoch.
    plan.in_memory: gathered from `in_memory` (decoded here when not given). Photos (`sizing`) are
    cached and shuffled undecoded, and decoded inside their crop each time."""
    standardize = standardize or Standardize()

    def to_float(image, label):    # on whole batches: one op instead of one per image
        if image.dtype == tf.uint8:
            image = standardize.scale(image)
        return standardize.center(image), label

    if plan.in_memory:
        in_memory = in_memory or DecodedImages(files, shape, shard_records, outputs)
        return with_threads(in_memory.batches(plan, start, augmentation, to_float).prefetch(AUTOTUNE), threads)
    ds = streamed(files, shape, plan, start, augmentation, shard_records, outputs, sizing)
    ds = ds.map(to_float, num_parallel_calls=AUTOTUNE)
    return with_threads(ds.prefetch(AUTOTUNE), threads)


def streamed(files, shape, plan: EpochPlan, start, augmentation, shard_records, outputs, sizing):
    """Batches read through the shuffle buffer (cached after the first epoch when they fit)."""
    def items(epoch=-1):
        if sizing:
            return encoded_records(files, shard_records, True, outputs, epoch, plan.seed)
        return decoded(files, shape, shard_records, True, outputs, epoch=epoch, seed=plan.seed)
    ds = plan.stream(items().cache() if plan.cached else per_epoch(files, plan, items), *start)
    if sizing:
        crop = augmentation or (lambda epoch, index, record: (
            sizing.evaluate(record[0][0], record[0][4]) / 255.0, record[1]))
        return ds.map(crop, num_parallel_calls=AUTOTUNE).batch(plan.batch_size, drop_remainder=True)
    ds = ds.batch(plan.batch_size, drop_remainder=True)
    if not augmentation:
        return ds.map(lambda epochs, indices, record: record)
    return ds.map(lambda epochs, indices, record: (
        augmentation.on_batch(epochs[0], indices[0] // plan.batch_size, record[0]), record[1]),
        num_parallel_calls=AUTOTUNE)


def eval_dataset(files, shape, *, batch_size: int, threads: int, shard_records=None,
                 repeat: bool = False, standardize: Standardize | None = None,
                 outputs: dict[str, str] | None = None, deterministic: bool = False,
                 sizing: ResizeCrop | None = None, with_ids: bool = False) -> tf.data.Dataset:
    """Batches of (image, label), or with `with_ids` (image, label, record id)."""
    standardize = standardize or Standardize()
    ds = decoded(files, shape, shard_records, deterministic, outputs=outputs, sizing=sizing, with_ids=with_ids).map(
        lambda image, label, *record_id: (*standardize(image, label), *record_id), num_parallel_calls=AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    return with_threads(ds.batch(batch_size).prefetch(AUTOTUNE), threads)


def with_threads(ds: tf.data.Dataset, threads: int) -> tf.data.Dataset:
    """Keep tf.data to this rank's share of the cores (several ranks share a host)."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, threads)
    return ds.with_options(options)
