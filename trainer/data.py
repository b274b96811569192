"""tf.data input for one Horovod rank.

files (manifest) -> this rank's files -> staged locally, sha256 checked -> interleaved reads
-> parse + decode (parallel map) -> [cache] -> shuffle -> repeat -> augment (parallel map)
-> batch -> prefetch (last)."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

from pipeline import records
from pipeline.manifest import Manifest
from pipeline.storage import Storage, join

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 2 * 2**30     # decoded images of one rank kept in memory below this


class ShardChecksumError(Exception):
    pass


def files_for_rank(files: list, rank: int, size: int) -> tuple[list, bool]:
    """Every rank reads whole files when there are enough of them; otherwise every rank reads
    all files and keeps every size-th record (returned flag True)."""
    if len(files) >= size:
        return files[rank::size], False
    return files, True


def stage(storage: Storage, dataset_url: str, manifest: Manifest, split: str, indices: list[int],
          cache_dir: str) -> list[str]:
    """Bring the given shards of a split to local disk (once; verified by sha256)."""
    shards = [manifest.splits[split].shards[i] for i in indices]
    local_root = os.path.join(cache_dir, manifest.name)

    def fetch(shard):
        path = os.path.join(local_root, shard.sha256[:16] + "-" + shard.file)
        if os.path.exists(path):
            return path
        url = join(dataset_url, shard.file)
        incoming = f"{path}.{os.getpid()}.incoming"   # ranks on one host may fetch the same shard
        storage.download(url, incoming)
        if sha256_of(incoming) != shard.sha256:
            os.remove(incoming)
            raise ShardChecksumError(f"{url}: sha256 differs from the manifest (corrupt or replaced)")
        os.replace(incoming, path)
        return path

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(fetch, shards))


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def decoded(paths: list[str], shape, shard_records: tuple[int, int] | None = None,
            with_ids: bool = False, outputs: dict[str, str] | None = None) -> tf.data.Dataset:
    """(uint8 image, label[, id]) per record, read with interleave and decoded in parallel.
    With `outputs` ({model output name: attribute}, several heads) the label is a dict of the
    records' attribute labels keyed by output name."""
    height, width, channels = shape
    spec = records.parse_spec(list((outputs or {}).values()))

    def parse(serialized):
        f = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_image(f[records.IMAGE], channels=channels, expand_animations=False)
        image = tf.image.resize_with_crop_or_pad(image, height, width)
        image.set_shape((height, width, channels))
        label = ({n: f[records.attribute_key(a)] for n, a in outputs.items()} if outputs
                 else f[records.LABEL])
        return (image, label, f[records.ID]) if with_ids else (image, label)

    files = tf.data.Dataset.from_tensor_slices(paths)
    ds = files.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(len(paths), 8)),
                          num_parallel_calls=AUTOTUNE, deterministic=False)
    if shard_records:
        ds = ds.shard(*shard_records)
    return ds.map(parse, num_parallel_calls=AUTOTUNE, deterministic=False)


def augment_fn(shape, flip: bool):
    """Random crop from the image padded by 1/8 of its size, and a horizontal flip (uint8)."""
    height, width, channels = shape
    pad = max(2, height // 8)

    def augment(image, label):
        image = tf.image.pad_to_bounding_box(image, pad, pad, height + 2 * pad, width + 2 * pad)
        image = tf.image.random_crop(image, (height, width, channels))
        if flip:
            image = tf.image.random_flip_left_right(image)
        return image, label
    return augment


def photometric_fn(brightness: float, contrast: float):
    """Random brightness shift and contrast factor on [0, 1] floats (before standardisation)."""
    def photometric(image, label):
        if brightness:
            image = tf.image.random_brightness(image, brightness)
        if contrast:
            image = tf.image.random_contrast(image, 1 - contrast, 1 + contrast)
        return tf.clip_by_value(image, 0.0, 1.0), label
    return photometric


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


def training_dataset(paths, shape, *, num_records: int, batch_size: int, seed: int,
                     augment: bool, flip: bool, threads: int, shard_records=None,
                     standardize: Standardize | None = None, brightness: float = 0.0,
                     contrast: float = 0.0, outputs: dict[str, str] | None = None) -> tf.data.Dataset:
    """Endless batches; the caller takes the same number of steps on every rank."""
    standardize = standardize or Standardize()
    ds = decoded(paths, shape, shard_records, outputs=outputs)
    if num_records * shape[0] * shape[1] * shape[2] <= CACHE_LIMIT_BYTES:
        ds = ds.cache()
        buffer = num_records
    else:
        buffer = 10_000
    ds = ds.shuffle(max(1, buffer), seed=seed, reshuffle_each_iteration=True).repeat()
    if augment:
        ds = ds.map(augment_fn(shape, flip), num_parallel_calls=AUTOTUNE)
    photometric = photometric_fn(brightness, contrast) if augment and (brightness or contrast) else None

    def to_float(image, label):                  # one map: each map stage costs per element
        image = standardize.scale(image)
        if photometric:
            image, label = photometric(image, label)
        return standardize.center(image), label

    if photometric:      # random per image: before batching
        ds = ds.map(to_float, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=True)
    else:                # the same arithmetic on a whole batch: one op instead of one per image
        ds = ds.batch(batch_size, drop_remainder=True).map(to_float, num_parallel_calls=AUTOTUNE)
    return with_threads(ds.prefetch(AUTOTUNE), threads)


def eval_dataset(paths, shape, *, batch_size: int, threads: int, shard_records=None,
                 repeat: bool = False, standardize: Standardize | None = None,
                 outputs: dict[str, str] | None = None) -> tf.data.Dataset:
    ds = decoded(paths, shape, shard_records, outputs=outputs).map(standardize or Standardize(),
                                                  num_parallel_calls=AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    return with_threads(ds.batch(batch_size).prefetch(AUTOTUNE), threads)


def with_threads(ds: tf.data.Dataset, threads: int) -> tf.data.Dataset:
    """Keep tf.data to this rank's share of the cores (several ranks share a host)."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, threads)
    return ds.with_options(options)
