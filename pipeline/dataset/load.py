"""A published split as a tf.data.Dataset: for a notebook, an inference or analysis job, and the
trainer's input (which adds its order, augmentation and batching).

    from pipeline.dataset.load import current_version, load
    ds = load("s3://bucket/datasets/photos", "test", image_size=224)   # (image, label) pairs
    for images, labels in ds.batch(256): ...

    version = current_version(url)               # several splits: one version for all of them
    train, test = (load(url, split, version=version) for split in ("train", "test"))

One rank's files (rank of size) are fetched as they are read (shard_cache.py: sha256-checked,
within a disk budget, in a folder of this process's own), parsed and decoded in parallel. Images
of a dataset of one size come as they are stored; photos of many sizes, or with `image_size`, as
the central crop resized to it (the evaluation's and the serving signature's crop: crops.py).
Images are float32 in [0, 1] (no standardisation: Manifest's pixel_mean/pixel_std are there to
apply), upright by each record's EXIF orientation, labels int64 indices into the manifest's
classes. A record whose image header declares more than the manifest's max_pixels stops the
iteration with the reason before it is decoded (headers.py). TensorFlow is imported here and in
crops.py only (records.parse_spec imports it when called): the ingestion job never imports
either module."""
from __future__ import annotations

import os
import tempfile

import tensorflow as tf

from pipeline.dataset import headers, records
from pipeline.dataset import manifest as manifest_lib
from pipeline.dataset.image_sizes import MAX_PIXELS
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.reader import RankShare, rank_share
from pipeline.dataset.shard_cache import ShardCache
from pipeline.dataset.crops import ResizeCrop, choose
from pipeline.dataset.storage import Storage

AUTOTUNE = tf.data.AUTOTUNE
READ_BUFFER = 8 * 2**20           # bytes read ahead in each shard file


def load(url: str, split: str, rank: int = 0, size: int = 1, image_size: int | tuple[int, int] | None = None,
         *, version: str | None = None, cache_dir: str | None = None, cache_limit_gb: float = 20.0,
         storage: Storage | None = None) -> tf.data.Dataset:
    """(image, label) for every record of `split` that rank `rank` of `size` reads, in a fixed
    order. `image_size`: S or (height, width) for photos of many sizes (default: the median
    shorter side, at most 224); a dataset of one image size is returned at its size unless given.
    `version` (`current_version(url)`, or a manifest's `.version`) pins what is read: pass one
    version to every split's load, and a publish in between never mixes two."""
    storage = storage or Storage()
    manifest = read_manifest(storage, url, version)
    if split not in manifest.splits:
        raise KeyError(f"{url} has no split {split!r} (it has: {', '.join(manifest.splits)})")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    sizing = choose(manifest, image_size)
    shape = sizing.shape if sizing else tuple(manifest.image_shape)
    folder = cache_dir or tempfile.mkdtemp(prefix="dataset-load-")
    cache = ShardCache(storage, url, os.path.join(folder, f"{split}-rank-{rank}"), cache_limit_gb * 2**30)
    share = rank_share(manifest, split, rank, size, cache)
    return decoded(share, shape, share.shard_records, deterministic=True, sizing=sizing,
                   max_pixels=manifest.max_pixels).map(
        lambda image, label: (tf.cast(image, tf.float32) / 255.0, label), num_parallel_calls=AUTOTUNE)


def current_version(url: str, storage: Storage | None = None) -> str | None:
    """The version `url` serves now (None for a dataset published before versions)."""
    return manifest_lib.current_version(storage or Storage(), url)


def serialized(files: list[str] | RankShare, shard_records: tuple[int, int] | None = None,
               deterministic: bool = False, epoch=-1, seed: int = 0) -> tf.data.Dataset:
    """Serialized records of the given files; deterministic=True gives the same order on every
    run (what exact resume and the NaN diagnosis rely on). `files`: local paths, read with
    interleave; or a rank's share, whose files are fetched as they are reached (ShardCache) and
    read one after another: in manifest order, or for epoch >= 0 (a tensor is fine) in an order
    drawn from (seed, epoch)."""
    if isinstance(files, RankShare):
        paths = tf.data.Dataset.from_generator(lambda e: files.local_paths(int(e), seed), args=(epoch,),
                                               output_signature=tf.TensorSpec((), tf.string))
        ds = paths.flat_map(lambda path: tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER))
    else:
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            tf.data.TFRecordDataset, cycle_length=max(1, min(len(files), 8)), num_parallel_calls=AUTOTUNE,
            deterministic=deterministic)
    return ds.shard(*shard_records) if shard_records else ds


def decoded(files: list[str] | RankShare, shape, shard_records: tuple[int, int] | None = None,
            deterministic: bool = False, outputs: dict[str, str] | None = None,
            sizing: ResizeCrop | None = None, epoch=-1, seed: int = 0,
            max_pixels: int = MAX_PIXELS, with_ids: bool = False) -> tf.data.Dataset:
    """(image, label) per record, decoded in parallel, upright: uint8 padded or cropped to
    `shape`, or with `sizing` (photos) float32 center crops. With `outputs` ({model output name:
    attribute}, several heads) the label is a dict of the records' attribute labels by output.
    `with_ids`: (image, label, record id)."""
    return encoded_records(files, shard_records, deterministic, outputs, epoch, seed, with_ids).map(
        lambda stored, label, *record_id: (decode_image(stored[0], shape, sizing, stored[4], max_pixels), label,
                                           *record_id),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def decoded_batches(files: list[str] | RankShare, shape, shard_records: tuple[int, int] | None = None,
                    outputs: dict[str, str] | None = None, batch_size: int = 256,
                    max_pixels: int = MAX_PIXELS) -> tf.data.Dataset:
    """decoded(..., deterministic=True) for images of one size, in batches of up to `batch_size`:
    one parse and one tf.data call per batch instead of per record, which is what small images
    cost (measured: 5x the records per second on 28x28 PNGs; benchmarks/trainer_input.py)."""
    spec = records.parse_spec(list((outputs or {}).values()))

    def decode_all(encoded, decode):
        return tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec(shape, tf.uint8))

    def parse_and_decode(serialized_batch):
        f = tf.io.parse_example(serialized_batch, spec)
        # Cropping or padding costs 2-4x the decoding of a small image: only batches that hold
        # an image of another size (by the records' own height and width), a turned one, or one
        # that is not a PNG within max_pixels by its header (each then checked in full) pay for it.
        exact = tf.reduce_all((f[records.HEIGHT] == shape[0]) & (f[records.WIDTH] == shape[1])
                              & (f[records.ORIENTATION] == 1)) & headers.pngs_within(f[records.IMAGE], max_pixels)
        images = tf.cond(exact, lambda: decode_all(f[records.IMAGE], lambda encoded: tf.ensure_shape(
                             tf.io.decode_image(encoded, channels=shape[2], expand_animations=False), shape)),
                         lambda: tf.map_fn(lambda stored: decode_image(stored[0], shape, None, stored[1], max_pixels),
                                           (f[records.IMAGE], f[records.ORIENTATION]),
                                           fn_output_signature=tf.TensorSpec(shape, tf.uint8)))
        if outputs:
            return images, {name: f[records.attribute_key(a)] for name, a in outputs.items()}
        return images, f[records.LABEL]

    return serialized(files, shard_records, True).batch(batch_size).map(
        parse_and_decode, num_parallel_calls=AUTOTUNE, deterministic=True)


def decode_image(encoded: tf.Tensor, shape, sizing: ResizeCrop | None = None, orientation=1,
                 max_pixels: int = MAX_PIXELS) -> tf.Tensor:
    """One stored image at the model's size, upright by EXIF `orientation`: uint8 padded or
    cropped to `shape` (a dataset of one size), or with `sizing` (photos) the float32 central
    crop (its own max_pixels). Evaluation and serving share it. An image whose header declares
    more than `max_pixels` stops the reader before it is decoded (headers.checked)."""
    if sizing:
        return sizing.evaluate(encoded, orientation)
    height, width, channels = shape
    image = tf.io.decode_image(headers.checked(encoded, max_pixels), channels=channels, expand_animations=False)
    image = tf.image.resize_with_crop_or_pad(headers.upright(image, orientation), height, width)
    image.set_shape((height, width, channels))
    return image


def encoded_records(files: list[str] | RankShare, shard_records: tuple[int, int] | None = None,
                    deterministic: bool = False, outputs: dict[str, str] | None = None, epoch=-1,
                    seed: int = 0, with_ids: bool = False) -> tf.data.Dataset:
    """((encoded image, format, height, width, orientation), label) per record, not yet decoded
    (height and width as stored); `with_ids`: the record's id third."""
    spec = records.parse_spec(list((outputs or {}).values()))

    def parse(serialized_record):
        f = tf.io.parse_single_example(serialized_record, spec)
        stored = (f[records.IMAGE], f[records.IMAGE_FORMAT], f[records.HEIGHT], f[records.WIDTH],
                  f[records.ORIENTATION])
        label = ({name: f[records.attribute_key(a)] for name, a in outputs.items()} if outputs
                 else f[records.LABEL])
        return (stored, label, f[records.ID]) if with_ids else (stored, label)

    return serialized(files, shard_records, deterministic, epoch, seed).map(
        parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def record_ids(files: list[str] | RankShare, shard_records: tuple[int, int] | None = None, epoch=-1,
               seed: int = 0) -> tf.data.Dataset:
    """The record ids, in the order of decoded(..., deterministic=True), without decoding images."""
    spec = {records.ID: tf.io.FixedLenFeature([], tf.string)}
    return serialized(files, shard_records, True, epoch, seed).map(
        lambda r: tf.io.parse_single_example(r, spec)[records.ID], num_parallel_calls=AUTOTUNE)
