"""Is a GPU node set up right? ResNet-50 images/s per GPU, on one GPU and on all of them, in
float32 and mixed precision, on synthetic data and on real shards; the real / synthetic ratio
says whether the input pipeline keeps the GPUs fed (about 1.0: yes; well below: input-bound).

    python -m benchmarks.gpu_check --dataset s3://datasets/imagenet     # on a GPU node
    python -m benchmarks.gpu_check --device cpu --model cnn --image-size 32 --steps 5   # anywhere

Each cell is a real `horovodrun -np N` of this script (one rank per GPU, pinned by local rank
as the trainer pins them). On --device cpu the "GPUs" are CPU slots: the table then only shows
that the script works; the figures mean nothing for a GPU."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = {"gpu": ("float32", "mixed_float16"), "cpu": ("float32", "mixed_bfloat16")}


def build(model_name: str, size: int, classes: int):
    import tensorflow as tf
    if model_name == "resnet50":
        return tf.keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=classes,
                                              classifier_activation=None)
    from trainer.model.models import build_model
    return build_model(model_name, (size, size, 3), classes)


def synthetic(size: int, batch: int, classes: int):
    import tensorflow as tf
    images = tf.random.uniform((batch, size, size, 3))
    labels = tf.random.uniform((batch,), 0, classes, tf.int64)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def real(dataset: str, size: int, batch: int, rank: int, ranks: int):
    """This rank's shards of the training split, decoded, resized to size x size, batched."""
    import tensorflow as tf

    from pipeline.dataset.manifest import read_manifest
    from pipeline.dataset.reader import rank_share
    from pipeline.dataset.shard_cache import ShardCache
    from pipeline.dataset.storage import Storage
    from pipeline.dataset.load import decoded
    storage = Storage()
    manifest = read_manifest(storage, dataset)
    share = rank_share(manifest, "train", rank, ranks,
                       ShardCache(storage, dataset, f"/tmp/gpu-check-cache/rank-{rank}", 50 * 2**30))
    shape = tuple(manifest.image_shape or (size, size, 3))
    images = decoded(share, (shape[0], shape[1], 3), share.shard_records).repeat()
    resize = lambda image, label: (tf.image.resize(image, (size, size)) / 255.0, label)  # noqa: E731
    return (images.map(resize, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)), len(manifest.classes)


def worker(args) -> None:
    """One rank: pinned as the trainer pins it, times `steps` steps after a warm-up."""
    import horovod.tensorflow.keras as hvd

    from trainer.model import objective, precision
    from trainer.runtime import devices
    from trainer.train import distributed_optimizer
    hvd.init()
    device = devices.place(hvd.local_rank(), hvd.local_size())
    devices.use_threads(devices.threads_per_rank(hvd.local_size()))
    precision.set_policy(args.precision)
    classes = 1000 if args.model == "resnet50" else 10
    if args.data == "real":
        ds, classes = real(args.dataset, args.image_size, args.batch_size, hvd.rank(), hvd.size())
    else:
        ds = synthetic(args.image_size, args.batch_size, classes)
    model = build(args.model, args.image_size, classes)
    optimizer = distributed_optimizer(objective.make_optimizer("sgd", 0.01, 0.9), args.precision, False, 1)
    model.compile(optimizer=optimizer, loss=objective.make_loss(classes))
    model.fit(ds, steps_per_epoch=args.warmup, verbose=0,
              callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0)])
    started = time.perf_counter()
    model.fit(ds, steps_per_epoch=args.steps, verbose=0)
    rate = args.steps * args.batch_size / (time.perf_counter() - started)
    print("RESULT " + json.dumps({"rank": hvd.rank(), "device": device, "images_per_second": rate}), flush=True)


def cell(args, ranks: int, precision: str, data: str) -> float:
    """Mean images/s per rank of one horovodrun."""
    command = ["horovodrun", "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo", sys.executable, "-m",
               "benchmarks.gpu_check", "--worker", "--precision", precision, "--data", data,
               "--model", args.model, "--image-size", str(args.image_size), "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
               *(["--dataset", args.dataset] if args.dataset else [])]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    out = subprocess.run(command, env=env, cwd=ROOT, text=True, capture_output=True, timeout=3600)
    rates = [json.loads(m)["images_per_second"] for m in re.findall(r"RESULT (\{.*\})", out.stdout)]
    if out.returncode or len(rates) != ranks:
        sys.exit(f"gpu_check: {' '.join(command)} failed\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return sum(rates) / ranks


def local_devices(kind: str) -> int:
    if kind == "cpu":
        return 2
    out = subprocess.run(["nvidia-smi", "-L"], text=True, capture_output=True)
    count = out.stdout.count("GPU ")
    if out.returncode or not count:
        sys.exit("gpu_check: no GPU found (nvidia-smi -L); use --device cpu to check the script itself")
    return count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--dataset", help="a published dataset for the real-data column (default: synthetic only)")
    p.add_argument("--model", default="resnet50", help="resnet50 (default) or a trainer model name")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128, help="per GPU (default %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per cell (default %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default %(default)s)")
    p.add_argument("--precisions", help="comma-separated (default: float32,mixed_float16 on GPUs, "
                   "float32,mixed_bfloat16 on CPUs)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--data", default="synthetic", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    counts = sorted({1, local_devices(args.device)})
    print(f"{args.model} {args.image_size}x{args.image_size}, batch {args.batch_size} per "
          f"{args.device.upper()}, {args.steps} steps: images/s per {args.device.upper()}")
    print(f"{'ranks':>5} {'precision':>15} {'synthetic':>10} {'real':>10} {'real/synth':>10}")
    for ranks in counts:
        for precision in (args.precisions.split(",") if args.precisions else PRECISIONS[args.device]):
            synth = cell(args, ranks, precision, "synthetic")
            data = cell(args, ranks, precision, "real") if args.dataset else None
            shown = f"{data:10.1f} {data / synth:10.2f}" if data else f"{'-':>10} {'-':>10}"
            print(f"{ranks:>5} {precision:>15} {synth:10.1f} {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
