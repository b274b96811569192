"""Photos through the trainer's input (issue 12), two ratios measured in this one run:

  ratio 1: the trainer's training pipeline at 224x224 (random-resized crops, the JPEG decoded
           inside the crop, flip, batch, standardise) in images/s
           / (a tight loop of the same fused decode-and-crop + resize, one image at a time on one
           thread, x cores)                                                         goal >= 0.9
  ratio 2: time to the first training batch when shards stream through the ShardCache
           / when the rank's whole share is staged first, on a dataset of --megabytes in the
           local S3 server (a fresh local folder each time; runs alternate)        goal <= 0.2
           The images are not kept in memory here (--memory-cache-gb 0, or a share larger than
           it): when a share fits in memory, the first epoch's full shuffle reads all of it
           before the first batch, streamed or not.

The photos are real (infra/local/photos.py: skimage's samples, CIFAR-10, pasted Fashion-MNIST),
upscaled so the shorter side is 256-512 px and saved as JPEG; records repeat to reach the size.

    python -m benchmarks.trainer_photos [--images 600] [--megabytes 1024] [--repeats 3]"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from infra.local import photos
from infra.local.s3server import LocalS3
from pipeline.dataset import records, tfrecord
from pipeline.dataset.manifest import Manifest, Shard, Split, read_manifest, write_manifest
from pipeline.dataset.naming import shard_files
from pipeline.dataset.reader import rank_share, stage
from pipeline.dataset.shard_cache import ShardCache
from pipeline.dataset.storage import Storage, join
from trainer.input import datasets as data
from trainer.input.augment import PhotoAugmentation
from pipeline.dataset.crops import ResizeCrop

SIZE, BATCH = 224, 64


def large_jpegs(count: int, seed: int = 0) -> list[bytes]:
    """Real photos, each resized so its shorter side is 256-512 px, as JPEG."""
    rng = np.random.default_rng(seed)
    sources = [b for _, _, b in photos.samples()] + [b for _, _, b in photos.pasted_fashion(64, seed=seed)]
    made = []
    for i in range(count):
        with Image.open(io.BytesIO(sources[i % len(sources)])) as img:
            img = img.convert("RGB")
            scale = rng.uniform(256, 512) / min(img.size)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=90)
            made.append(out.getvalue())
    return made


def write_dataset(out: str, jpegs: list[bytes], megabytes: float, shards: int) -> str:
    """A published dataset of the JPEGs, repeated to about `megabytes`, in `shards` files."""
    os.makedirs(out, exist_ok=True)
    examples = []
    for i, blob in enumerate(jpegs):
        with Image.open(io.BytesIO(blob)) as img:
            examples.append(records.encode_example(records.ImageRecord(
                id=f"{i}", image=blob, image_format="jpeg", height=img.height, width=img.width,
                channels=3, label=i % 10, label_name=f"c{i % 10}")))
    total = max(len(examples), int(megabytes * 2**20 / np.mean([len(e) for e in examples])))
    written = []
    for k in range(shards):
        file = shard_files("photos", "train").name(k, shards)
        with open(os.path.join(out, file), "wb") as f:
            tfrecord.write_records(f, (examples[i % len(examples)] for i in range(k, total, shards)))
        body = open(os.path.join(out, file), "rb").read()
        written.append(Shard(file, len(range(k, total, shards)), len(body), hashlib.sha256(body).hexdigest()))
    split = Split(written, [total // 10] * 10)
    manifest = Manifest("photos", [f"c{i}" for i in range(10)], None, {"train": split},
                        {"count": 0, "by_reason": {}}, {"benchmark": True})
    return write_manifest(Storage(), out, manifest)


def tight_loop_rate(jpegs: list[bytes], sizing: ResizeCrop) -> float:
    """The fused decode-and-crop + resize alone, one image at a time, on one thread."""
    crop = tf.function(lambda blob, h, w, key: sizing.random_crop(blob, b"jpeg", h, w, key))
    inputs = [(tf.constant(b), tf.constant(Image.open(io.BytesIO(b)).height),
               tf.constant(Image.open(io.BytesIO(b)).width), tf.constant([1, i], tf.int64))
              for i, b in enumerate(jpegs)]
    crop(*inputs[0])                                     # traced once
    started = time.perf_counter()
    for blob, h, w, key in inputs:
        crop(blob, h, w, key)
    return len(jpegs) / (time.perf_counter() - started)


def pipeline_rate(share, sizing: ResizeCrop, count: int) -> float:
    plan = data.epoch_plan(count, sizing.shape, steps=count // BATCH, batch_size=BATCH, seed=1,
                           record_bytes=0)
    augment = PhotoAugmentation(sizing.shape, 1, flip=True, sizing=sizing)
    ds = data.training_dataset(share, sizing.shape, plan, augmentation=augment, threads=os.cpu_count(),
                               sizing=sizing)
    it = iter(ds)
    for _ in range(plan.steps):                         # warm-up: tracing, the first epoch's cache
        next(it)
    started, images = time.perf_counter(), 0
    for _ in range(max(50, plan.steps)):                # well past what prefetch held back
        images += int(next(it)[0].shape[0])
    return images / (time.perf_counter() - started)


def first_batch_seconds(storage, url, manifest, sizing, folder, streaming: bool) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    if streaming:
        share = rank_share(manifest, "train", 0, 2, ShardCache(storage, url, folder, 20 * 2**30))
    else:
        share = stage(storage, url, manifest, "train", list(range(0, len(manifest.splits["train"].shards), 2)),
                      folder)
    train = manifest.splits["train"]
    plan = data.epoch_plan(train.num_records // 2, sizing.shape, steps=10, batch_size=BATCH, seed=1,
                           record_bytes=train.num_bytes / train.num_records,
                           memory_limit=0)      # as --memory-cache-gb 0, or a share larger than it
    next(iter(data.training_dataset(share, sizing.shape, plan, augmentation=None, threads=2, sizing=sizing)))
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=600, help="distinct photos (default 600)")
    p.add_argument("--megabytes", type=float, default=1024, help="dataset size for ratio 2 (default 1024)")
    p.add_argument("--shards", type=int, default=16, help="shard files for ratio 2 (default 16)")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of ratio 2 (default 3)")
    args = p.parse_args()
    sizing, cores = ResizeCrop(SIZE, SIZE, 3), os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        jpegs = large_jpegs(args.images)
        small = write_dataset(os.path.join(tmp, "small"), jpegs, 0, 2)
        tight = tight_loop_rate(jpegs, sizing)
        local = read_manifest(Storage(), os.path.dirname(small))
        paths = [os.path.join(tmp, "small", s.file) for s in local.splits["train"].shards]
        rate = pipeline_rate(paths, sizing, len(jpegs))
        print(f"ratio 1: pipeline {rate:.0f} img/s / (tight fused decode-and-crop {tight:.0f} img/s x {cores} "
              f"cores) = {rate / (tight * cores):.2f}  (goal >= 0.9)")
        server = LocalS3().start()
        try:
            os.environ.update(server.env())
            storage, url = Storage(), "s3://bench/photos"
            storage.ensure_bucket(url)
            big = os.path.dirname(write_dataset(os.path.join(tmp, "big"), jpegs, args.megabytes, args.shards))
            for name in os.listdir(big):
                storage.upload(os.path.join(big, name), join(url, name))
            shutil.rmtree(big)
            manifest = read_manifest(storage, url)
            timings = {True: [], False: []}
            for _ in range(args.repeats):
                for streaming in (False, True):
                    timings[streaming].append(first_batch_seconds(storage, url, manifest, sizing,
                                                                  os.path.join(tmp, "cache"), streaming))
            staged, streamed = statistics.median(timings[False]), statistics.median(timings[True])
            print(f"ratio 2: first batch streaming {streamed:.2f} s / staging rank 0's half of "
                  f"{manifest.splits['train'].num_bytes / 2**20:.0f} MiB {staged:.2f} s = "
                  f"{streamed / staged:.2f}  (goal <= 0.2; medians of {args.repeats}, alternating)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
