"""The trainer's training input vs two baselines on the same records, measured in this one run.

  bound:   a tight single-thread decode loop (PIL, image bytes already in memory) x cores
  ratio 1: the trainer's training input over --epochs epochs, counted from nothing (its one
           decode pass included: images of one size that fit in memory are decoded once, in
           batches, then gathered and augmented a whole batch at a time) / bound    goal >= 0.9
  ratio 2: the same / a naive sequential pipeline (TFRecordDataset -> map(parse, decode,
           augment one image) -> batch, decoding every epoch, TensorFlow's default options),
           both feeding a consumer that spends --step-ms per batch (the training step)  goal >= 1.8
  ratio 3: epochs after the first: the trainer's exact-resume order (fixed by (seed, epoch),
           stateless random numbers) / a plain reshuffling shuffle().repeat() with stateful random
           ops per image: what exact resume costs, or saves
Also printed: the decode pass alone / bound (what the first epoch of a dataset too large for
--memory-cache-gb costs, where decoding is per image on every epoch).

    python -m benchmarks.trainer_input [--records 20000] [--epochs 3] [--step-ms 1] [--repeats 3]"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks.trainer_dataset import build
from pipeline.dataset import records
from pipeline.dataset.load import decoded, decoded_batches
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage, join
from trainer.input import datasets as data
from trainer.input.augment import Augmentation

BATCH = 128


def files(dataset_dir):
    manifest = read_manifest(Storage(), dataset_dir)
    return [join(dataset_dir, s.file) for s in manifest.splits["train"].shards], manifest


def tight_loop_rate(paths) -> float:
    """Decode only: image bytes already in memory, one thread, no pipeline at all."""
    from PIL import Image

    blobs = [records.decode_example(r.numpy()).image for p in paths for r in tf.data.TFRecordDataset(p)]
    started = time.perf_counter()
    for blob in blobs:
        np.asarray(Image.open(io.BytesIO(blob)))
    return len(blobs) / (time.perf_counter() - started)


def consume(make, batches: int, step_s: float = 0.0) -> float:
    """images/s of `batches` batches of the dataset make() builds, timed from building it."""
    started = time.perf_counter()
    for images, _ in make().take(batches):
        if step_s:
            end = time.perf_counter() + step_s     # the "training step": a CPU-free wait
            while time.perf_counter() < end:
                time.sleep(step_s / 10)
    return batches * BATCH / (time.perf_counter() - started)


def trainer(paths, shape, steps, cores):
    plan = data.epoch_plan(steps * BATCH, shape, steps=steps, batch_size=BATCH, seed=1)
    assert plan.in_memory
    return lambda: data.training_dataset(paths, shape, plan, augmentation=Augmentation(shape, 1), threads=cores)


def augment_one(shape):
    """The padded crop and flip of one image with stateful random ops (the tutorial way)."""
    height, width, _ = shape
    pad = max(2, height // 8)

    def augment(image, label):
        image = tf.image.pad_to_bounding_box(image, pad, pad, height + 2 * pad, width + 2 * pad)
        return tf.image.random_flip_left_right(tf.image.random_crop(image, shape)), label
    return augment


def naive(paths, shape):
    spec = records.parse_spec()

    def parse(serialized):
        f = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_image(f[records.IMAGE], channels=shape[2], expand_animations=False)
        image.set_shape(shape)
        image, label = augment_one(shape)(image, f[records.LABEL])
        return tf.cast(image, tf.float32) / 255.0, label
    return lambda: tf.data.TFRecordDataset(paths).map(parse).batch(BATCH).repeat()


def reshuffled(paths, shape, cores):
    """What the trainer did before exact resume: one endless reshuffled stream, stateful RNG."""
    def make():
        ds = decoded(paths, shape).cache().shuffle(20_000, seed=1).repeat()
        ds = ds.map(augment_one(shape), num_parallel_calls=data.AUTOTUNE).batch(BATCH, drop_remainder=True)
        ds = ds.map(lambda x, y: (data.Standardize()(x, y)), num_parallel_calls=data.AUTOTUNE)
        return data.with_threads(ds.prefetch(data.AUTOTUNE), cores)
    return make


def later_epochs(make, steps) -> float:
    """images/s after the first epoch (which fills a cache or decodes into memory)."""
    iterator = iter(make())
    for _ in range(steps):
        next(iterator)
    started = time.perf_counter()
    for _ in range(2 * steps):
        next(iterator)
    return 2 * steps * BATCH / (time.perf_counter() - started)


def decode_pass(paths, shape, cores) -> float:
    started, count = time.perf_counter(), 0
    for images, _ in data.with_threads(decoded_batches(paths, shape), cores):
        count += int(images.shape[0])
    return count / (time.perf_counter() - started)


def measure(paths, shape, args, cores) -> dict:
    steps = args.records // BATCH
    total = steps * args.epochs
    return {"tight": tight_loop_rate(paths) * cores,
            "decode pass": decode_pass(paths, shape, cores),
            "trainer free": consume(trainer(paths, shape, steps, cores), total),
            "trainer busy": consume(trainer(paths, shape, steps, cores), total, args.step_ms / 1000),
            "naive busy": consume(naive(paths, shape), total, args.step_ms / 1000),
            "exact later": later_epochs(trainer(paths, shape, steps, cores), steps),
            "reshuffled later": later_epochs(reshuffled(paths, shape, cores), steps)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3, help="epochs of ratios 1 and 2 (default 3)")
    p.add_argument("--step-ms", type=float, default=1.0, help="consumer's work per batch (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="runs of every measurement; medians shown")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        build(tmp, args.records, 100, 8)
        paths, manifest = files(tmp)
        shape = tuple(manifest.image_shape)
        consume(trainer(paths, shape, 10, cores), 5)                 # warm up TF
        runs = [measure(paths, shape, args, cores) for _ in range(args.repeats)]
    m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    spread = lambda a, b: f"{min(r[a] / r[b] for r in runs):.2f}-{max(r[a] / r[b] for r in runs):.2f}"  # noqa: E731
    print(f"records {args.records}, cores {cores}, batch {BATCH}, {args.epochs} epochs, consumer step "
          f"{args.step_ms} ms, medians of {args.repeats} runs (range of the ratio in brackets)")
    print(f"bound: tight decode loop x {cores} cores = {m['tight']:.0f} images/s")
    print(f"decode pass alone: {m['decode pass']:.0f} images/s = {m['decode pass'] / m['tight']:.2f} of the bound "
          f"[{spread('decode pass', 'tight')}]")
    print(f"ratio 1: trainer input over {args.epochs} epochs {m['trainer free']:.0f} images/s / bound = "
          f"{m['trainer free'] / m['tight']:.2f} [{spread('trainer free', 'tight')}]  (goal >= 0.9)")
    print(f"ratio 2: with a busy consumer, trainer {m['trainer busy']:.0f} / naive {m['naive busy']:.0f} images/s "
          f"= {m['trainer busy'] / m['naive busy']:.2f} [{spread('trainer busy', 'naive busy')}]  (goal >= 1.8)")
    print(f"ratio 3: later epochs, exact-resume order {m['exact later']:.0f} / reshuffled stream "
          f"{m['reshuffled later']:.0f} images/s = {m['exact later'] / m['reshuffled later']:.2f} "
          f"[{spread('exact later', 'reshuffled later')}]")


if __name__ == "__main__":
    main()
