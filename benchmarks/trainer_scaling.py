"""Horovod overhead and scaling of the training step, and the cost of each numeric setting,
measured in this one run. Every variant runs --repeat times, the variants alternating (this
machine's speed drifts), and the median and the spread (min-max) are printed.

  ratio 1: horovodrun -np 1 step time / plain single-process Keras fit, one thread each  goal <= 1.05
  ratio 2: horovodrun -np 2 throughput / horovodrun -np 1, one thread per rank          goal >= 1.8
  ratio 3: horovodrun -np 2 throughput / plain Keras using every core of the host
  settings: -np 2 images/s with --precision mixed_float16 / mixed_bfloat16, --xla, --fp16-allreduce,
            each / float32 (a CPU has no fast float16 or bfloat16: these show the cost of the
            machinery on a CPU, not the GPU speed-up; see benchmarks/gpu_check.py for that)
Every variant trains the trainer's model on one in-memory batch (no input cost), so the ratios
isolate Horovod's allreduce, its launch and the numeric settings. They run with the trainer's
HOROVOD_CYCLE_TIME (trainer/runtime/devices.py) unless the environment sets one; --cycle-times adds
-np 1 and -np 2 runs at each of those values, the measurement behind the trainer's default.

    python -m benchmarks.trainer_scaling [--model cnn] [--batch 64] [--steps 60] [--repeat 5]
                                         [--cycle-times 1,5,20]"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"float32": [], "mixed_float16": ["--precision", "mixed_float16"],
            "mixed_bfloat16": ["--precision", "mixed_bfloat16"], "xla": ["--xla"],
            "fp16_allreduce": ["--fp16-allreduce"]}


def worker(args) -> None:
    """One process: train `steps` steps, print its images/s (after a warm-up)."""
    import tensorflow as tf
    threads = args.threads or 1
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from trainer.model import objective, precision
    from trainer.model.models import build_model

    base, callbacks, rank = objective.make_optimizer("sgd", 0.01, 0.9), [], 0
    precision.set_policy(args.precision)
    precision.set_xla(args.xla)
    if args.worker == "horovod":
        import horovod.tensorflow.keras as hvd
        from trainer.train import distributed_optimizer
        hvd.init()
        rank = hvd.rank()
        optimizer = distributed_optimizer(base, args.precision, args.fp16_allreduce, 1)
        callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0)]
    else:
        optimizer = base
    tf.keras.utils.set_random_seed(1)
    model = build_model(args.model, (28, 28, 1), 10)
    model.compile(optimizer=optimizer, loss=objective.make_loss(10))
    images = tf.random.uniform((args.batch, 28, 28, 1))
    labels = tf.random.uniform((args.batch,), 0, 10, tf.int64)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.fit(ds, steps_per_epoch=10, verbose=0, callbacks=callbacks)          # warm-up, trace
    started = time.perf_counter()
    model.fit(ds, steps_per_epoch=args.steps, verbose=0)
    seconds = time.perf_counter() - started
    print(f"RESULT rank {rank} {args.steps * args.batch / seconds:.1f} images/s "
          f"{1000 * seconds / args.steps:.2f} ms/step", flush=True)


def run(command: list[str], env: dict | None = None) -> list[tuple[float, float]]:
    from trainer.flags import XLA_ENV

    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", **(env or {})}
    if "--xla" in command:
        env.update(XLA_ENV)
    out = subprocess.run(command, env=env, cwd=ROOT, text=True, capture_output=True, timeout=900)
    found = re.findall(r"RESULT rank \d+ ([0-9.]+) images/s ([0-9.]+) ms/step", out.stdout)
    if out.returncode or not found:
        sys.exit(f"benchmark run failed: {' '.join(command)}\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return [(float(a), float(b)) for a, b in found]


def shown(values: list[float], unit: str) -> str:
    return f"{statistics.median(values):.1f} {unit} (min {min(values):.1f}, max {max(values):.1f})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeat", type=int, default=5, help="runs of each variant, alternating (default 5)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="numeric settings to compare at -np 2")
    p.add_argument("--cycle-times", default="", help="HOROVOD_CYCLE_TIME values (ms) to compare "
                   "at -np 1 and -np 2, e.g. 1,5,20 (default: none)")
    p.add_argument("--worker", choices=("plain", "horovod"), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--xla", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fp16-allreduce", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from trainer.runtime.devices import DEFAULT_CYCLE_TIME_MS, cpu_budget

    cores = cpu_budget()
    me = [sys.executable, "-m", "benchmarks.trainer_scaling", "--model", args.model,
          "--batch", str(args.batch), "--steps", str(args.steps)]
    hvd = lambda n: ["horovodrun", "-np", str(n), "-H", f"localhost:{n}", "--gloo"]  # noqa: E731
    env = {"HOROVOD_CYCLE_TIME": os.environ.get("HOROVOD_CYCLE_TIME", DEFAULT_CYCLE_TIME_MS)}
    variants = {"plain, 1 thread": (me + ["--worker", "plain"], env),
                f"plain, {cores} threads": (me + ["--worker", "plain", "--threads", str(cores)], env),
                "np1": (hvd(1) + me + ["--worker", "horovod"], env)}
    variants.update({f"np2 {name}": (hvd(2) + me + ["--worker", "horovod", *flags], env)
                     for name, flags in SETTINGS.items() if name in args.settings.split(",")})
    for cycle in filter(None, args.cycle_times.split(",")):
        for n in (1, 2):
            variants[f"np{n} cycle {cycle} ms"] = (hvd(n) + me + ["--worker", "horovod"],
                                                   {"HOROVOD_CYCLE_TIME": cycle})
    ms = {name: [] for name in variants}
    ips = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, (command, variant_env) in variants.items():
            results = run(command, variant_env)
            ms[name].append(statistics.mean(r[1] for r in results))
            ips[name].append(sum(r[0] for r in results))
    print(f"model {args.model}, batch {args.batch} per process, {args.steps} steps, {args.repeat} runs each, "
          f"{cores} cores, HOROVOD_CYCLE_TIME={env['HOROVOD_CYCLE_TIME']} unless a variant says otherwise")
    for name in variants:
        print(f"  {name:>22}: {shown(ms[name], 'ms/step')}, {shown(ips[name], 'images/s')}")
    med = {name: statistics.median(v) for name, v in ips.items()}
    step = {name: statistics.median(v) for name, v in ms.items()}
    print(f"ratio np1 / plain step time = {step['np1'] / step['plain, 1 thread']:.3f}  (goal <= 1.05)")
    print(f"ratio np2 / np1 throughput = {med['np2 float32'] / med['np1']:.2f}  (goal >= 1.8)")
    print(f"ratio np2 / plain Keras on {cores} threads = {med['np2 float32'] / med[f'plain, {cores} threads']:.2f}")
    for name in SETTINGS:
        if name != "float32" and f"np2 {name}" in med:
            print(f"ratio np2 {name} / np2 float32 = {med[f'np2 {name}'] / med['np2 float32']:.2f}")


if __name__ == "__main__":
    main()
