"""tf.data input vs two baselines on the same records, measured in this one run.

  ratio 1: the trainer's first-pass pipeline (interleave, parallel parse+decode, batch, prefetch)
           / (a tight single-thread decode loop on the same image bytes x cores)   goal >= 0.9
  ratio 2: the same pipeline / a naive sequential tf.data pipeline (no parallel map, no
           prefetch) feeding a consumer that does work per batch                      goal >= 1.8
The consumer's work per batch (a fixed busy wait) stands in for the training step: prefetch and
parallel decode let input overlap it; the naive pipeline cannot.
  ratio 3: the trainer's training pipeline in its second epoch (cached, per-epoch order fixed by
           (seed, epoch), stateless augmentation: what exact resume needs) / the same work with
           a plain reshuffling shuffle().repeat() and stateful random ops: the cost of exact resume

    python -m benchmarks.trainer_input [--records 20000] [--step-ms 5]"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks.trainer_dataset import build
from pipeline.dataset import records
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage, join
from pipeline.dataset.load import decoded
from trainer import data
from trainer.inputcheck import input_rate

BATCH = 128


def files(dataset_dir):
    manifest = read_manifest(Storage(), dataset_dir)
    return [join(dataset_dir, s.file) for s in manifest.splits["train"].shards], manifest


def tight_loop_rate(paths) -> float:
    """Decode only: image bytes already in memory, one thread, no pipeline at all."""
    from PIL import Image
    import io

    blobs = [records.decode_example(r.numpy()).image for p in paths for r in tf.data.TFRecordDataset(p)]
    started = time.perf_counter()
    for blob in blobs:
        np.asarray(Image.open(io.BytesIO(blob)))
    return len(blobs) / (time.perf_counter() - started)


def consume(ds, step_s: float) -> float:
    count, started = 0, time.perf_counter()
    for images, _ in ds:
        count += int(images.shape[0])
        if step_s:
            end = time.perf_counter() + step_s     # the "training step": CPU-free wait
            while time.perf_counter() < end:
                time.sleep(step_s / 10)
    return count / (time.perf_counter() - started)


def naive(paths, shape):
    spec = records.parse_spec()

    def parse(serialized):
        f = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_image(f[records.IMAGE], channels=shape[2], expand_animations=False)
        image.set_shape(shape)
        return tf.cast(image, tf.float32) / 255.0, f[records.LABEL]
    return tf.data.TFRecordDataset(paths).map(parse).batch(BATCH)


def trainer_pipeline(paths, shape, threads):
    ds = decoded(paths, shape).map(data.Standardize(), num_parallel_calls=data.AUTOTUNE)
    return data.with_threads(ds.batch(BATCH).prefetch(data.AUTOTUNE), threads)


def exact_order(paths, shape, threads, steps):
    plan = data.epoch_plan(steps * BATCH, shape, steps=steps, batch_size=BATCH, seed=1)
    return data.training_dataset(paths, shape, plan, augmentation=data.Augmentation(shape, 1),
                                 threads=threads)


def reshuffled(paths, shape, threads, steps):
    """What the trainer did before exact resume: one endless reshuffled stream, stateful RNG."""
    height, width, channels = shape
    pad = max(2, height // 8)

    def augment(image, label):
        image = tf.image.pad_to_bounding_box(image, pad, pad, height + 2 * pad, width + 2 * pad)
        image = tf.image.random_flip_left_right(tf.image.random_crop(image, shape))
        return image, label

    ds = decoded(paths, shape).cache().shuffle(steps * BATCH, seed=1).repeat()
    ds = ds.map(augment, num_parallel_calls=data.AUTOTUNE).batch(BATCH, drop_remainder=True)
    ds = ds.map(lambda x, y: (data.Standardize()(x, y)), num_parallel_calls=data.AUTOTUNE)
    return data.with_threads(ds.prefetch(data.AUTOTUNE), threads)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, default=20000)
    p.add_argument("--step-ms", type=float, default=5.0)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        build(tmp, args.records, 100, 8)
        paths, manifest = files(tmp)
        shape = tuple(manifest.image_shape)
        consume(trainer_pipeline(paths, shape, cores).take(5), 0)          # warm up TF
        tight = tight_loop_rate(paths)
        ours_free = consume(trainer_pipeline(paths, shape, cores), 0)
        naive_busy = consume(naive(paths, shape), args.step_ms / 1000)
        ours_busy = consume(trainer_pipeline(paths, shape, cores), args.step_ms / 1000)
        steps = args.records // BATCH
        # images/s over epoch 2 (epoch 1 fills the cache)
        exact = input_rate(exact_order(paths, shape, cores, steps), steps, BATCH, warmup=steps)
        plain = input_rate(reshuffled(paths, shape, cores, steps), steps, BATCH, warmup=steps)
    print(f"records {args.records}, cores {cores}, batch {BATCH}, consumer step {args.step_ms} ms")
    print(f"tight decode loop (1 thread): {tight:.0f} images/s; x {cores} cores = {tight * cores:.0f}")
    print(f"trainer pipeline, free consumer: {ours_free:.0f} images/s")
    print(f"ratio trainer / (tight x cores) = {ours_free / (tight * cores):.2f}  (goal >= 0.9)")
    print(f"naive pipeline, busy consumer: {naive_busy:.0f} images/s; trainer pipeline: {ours_busy:.0f}")
    print(f"ratio trainer / naive = {ours_busy / naive_busy:.2f}  (goal >= 1.8)")
    print(f"training input, epoch 2: exact-resume order {exact:.0f} images/s; reshuffled stream {plain:.0f}")
    print(f"ratio exact-resume / reshuffled = {exact / plain:.2f}  (the cost of exact resume)")


if __name__ == "__main__":
    main()
