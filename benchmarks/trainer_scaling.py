"""Horovod overhead and scaling of the training step, measured in this one run.

  ratio 1: horovodrun -np 1 step time / plain single-process Keras fit        goal <= 1.05
  ratio 2: horovodrun -np 2 throughput / horovodrun -np 1, one compute
           thread per rank in both                                            goal >= 1.8
Every variant trains the trainer's model on the same in-memory batch (no input cost), with one
intra-op thread per process, so the ratios isolate Horovod's allreduce and launch overheads.
On a host with fewer free cores than ranks, ratio 2 measures the contention, not Horovod.

    python -m benchmarks.trainer_scaling [--model cnn] [--batch 64] [--steps 60]"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(model_name: str, batch: int, steps: int, distributed: bool) -> None:
    """One process: train `steps` steps, print its images/s (after a warm-up)."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from trainer.models import build_model
    from trainer.objective import make_loss

    optimizer = tf.keras.optimizers.legacy.SGD(0.01, momentum=0.9)
    callbacks, rank = [], 0
    if distributed:
        import horovod.tensorflow.keras as hvd
        hvd.init()
        rank = hvd.rank()
        optimizer = hvd.DistributedOptimizer(optimizer)
        callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0)]
    tf.keras.utils.set_random_seed(1)
    model = build_model(model_name, (28, 28, 1), 10)
    model.compile(optimizer=optimizer, loss=make_loss(10))
    images = tf.random.uniform((batch, 28, 28, 1))
    labels = tf.random.uniform((batch,), 0, 10, tf.int64)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(ds, steps_per_epoch=10, verbose=0, callbacks=callbacks)          # warm-up, trace
    started = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - started
    print(f"RESULT rank {rank} {steps * batch / seconds:.1f} images/s {1000 * seconds / steps:.2f} ms/step",
          flush=True)


def run(command: list[str]) -> list[tuple[float, float]]:
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    out = subprocess.run(command, env=env, cwd=ROOT, text=True, capture_output=True, timeout=900)
    found = re.findall(r"RESULT rank \d+ ([0-9.]+) images/s ([0-9.]+) ms/step", out.stdout)
    if out.returncode or not found:
        sys.exit(f"benchmark run failed: {' '.join(command)}\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return [(float(a), float(b)) for a, b in found]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--worker", choices=("plain", "horovod"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.model, args.batch, args.steps, args.worker == "horovod")
    me = [sys.executable, "-m", "benchmarks.trainer_scaling", "--model", args.model,
          "--batch", str(args.batch), "--steps", str(args.steps)]
    hvd = lambda n: ["horovodrun", "-np", str(n), "-H", f"localhost:{n}", "--gloo"]
    plain = run(me + ["--worker", "plain"])[0]
    one = run(hvd(1) + me + ["--worker", "horovod"])[0]
    two = run(hvd(2) + me + ["--worker", "horovod"])
    two_total = sum(r[0] for r in two)
    print(f"model {args.model}, batch {args.batch} per process, {args.steps} steps, 1 thread per process, "
          f"{os.cpu_count()} cores")
    print(f"plain Keras fit: {plain[1]:.1f} ms/step; horovodrun -np 1: {one[1]:.1f} ms/step; "
          f"-np 2: {two_total:.0f} images/s in total vs {one[0]:.0f} for -np 1")
    print(f"ratio np1 / plain step time = {one[1] / plain[1]:.3f}  (goal <= 1.05)")
    print(f"ratio np2 / np1 throughput = {two_total / one[0]:.2f}  (goal >= 1.8)")


if __name__ == "__main__":
    main()
