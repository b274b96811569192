"""Checkpoint save to S3 / the same to local disk, measured in this one run against the local S3
server (SeaweedFS over HTTP).                                                  goal <= 1.3

The trainer writes the checkpoint locally and uploads + commits it in a background thread, so
training pauses only for the local write. Printed: that pause with an S3 store / the local save
(the same write with a local store: the baseline), and the full S3 commit (upload, sha256,
COMMITTED marker, pruning; off the training path) / the local save, and the local commit.

    python -m benchmarks.trainer_checkpoint [--model cnn] [--repeat 5]"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import tensorflow as tf

from infra.local.s3server import LocalS3
from pipeline.dataset.storage import Storage
from trainer.model.models import build_model
from trainer.state.checkpoints import CheckpointStore


def timed_saves(store: CheckpointStore, checkpoint, repeat: int) -> tuple[float, float]:
    """Median (pause of training, full commit) in seconds."""
    paused, full = [], []
    for epoch in range(1, repeat + 1):
        started = time.perf_counter()
        store.save_async(checkpoint, epoch, {"benchmark": True})
        paused.append(time.perf_counter() - started)
        store.wait()
        full.append(time.perf_counter() - started)
    return statistics.median(paused), statistics.median(full)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    model = build_model(args.model, (28, 28, 1), 10)
    optimizer = tf.keras.optimizers.legacy.SGD(0.01, momentum=0.9)
    optimizer._create_all_weights(model.trainable_variables)       # momentum slots, as in training
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    with tempfile.TemporaryDirectory() as tmp, LocalS3(log_path=f"{tmp}/s3.log") as s3:
        os.environ.update(s3.env())                      # its endpoint and credentials for boto3
        storage = Storage(endpoint_url=s3.endpoint_url)
        storage.ensure_bucket("s3://bench/x")
        local = timed_saves(CheckpointStore(storage, f"{tmp}/ckpts", f"{tmp}/stage-a", 2), checkpoint,
                            args.repeat)
        remote = timed_saves(CheckpointStore(storage, "s3://bench/ckpts", f"{tmp}/stage-b", 2),
                             checkpoint, args.repeat)
    size = sum(v.numpy().nbytes for v in model.variables) * 2 / 2**20
    print(f"model {args.model} (~{size:.1f} MiB with momentum), median of {args.repeat} saves")
    print(f"local store: save {local[0] * 1000:.0f} ms, full commit {local[1] * 1000:.0f} ms; "
          f"S3 store: training paused {remote[0] * 1000:.0f} ms, full commit {remote[1] * 1000:.0f} ms "
          "(in the background)")
    print(f"ratio S3 pause of training / local save = {remote[0] / local[0]:.2f}  (goal <= 1.3)")
    print(f"ratio S3 full commit / local save = {remote[1] / local[0]:.2f}, "
          f"/ local full commit = {remote[1] / local[1]:.2f}  (off the training path)")


if __name__ == "__main__":
    main()
