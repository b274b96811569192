"""Ingestion speed: the Beam job (DirectRunner, 2 worker processes) against
  - a naive single-process loop doing the same work on the same images (read -> decode check ->
    Example -> TFRecordWriter): goal beam >= 1.7x;
  - the same work as a Beam pipeline that groups the encoded images by shard (the bytes go
    through a GroupByKey, the design the key-only shuffle replaced);
  - the peer: TensorFlow Datasets' own Beam writer, a minimal builder over the same folder
    (benchmarks/tfds_peer.py), same runner and workers: goal beam >= 1.0x while doing the
    validation, dedupe, quarantine and statistics TFDS does not.

    python benchmarks/ingest.py [--images 12000] [--size 128] [--workers 2] [--repeats 3]
    python benchmarks/ingest.py --runner portable [--images 40000] [--size 256]
    python benchmarks/ingest.py --runner index [--images 12000]

--runner index times the job with its Parquet index (the default) against the same job with
--no_index: the index's share of the job (goal <= 5 %).

--runner portable times the job through Beam's job service with --workers SDK workers from a
worker pool (infra/local/beam_cluster.py, started once before the runs, as a cluster is up before
a job), against the same job on the DirectRunner and the naive loop.

Images are real Fashion-MNIST pictures, upscaled to --size and saved as RGB JPEGs in the
folder-per-class layout on local disk, so the figures measure the pipeline, not an S3 emulator.
Each variant runs in a process of its own, --repeats times, in a rotating order (this machine
is noisy), and the medians are compared. Our job is timed as the command a user runs (`python -m
pipeline`, its imports, checks, worker start-up and publish included: ~2.4 s on 100 images
here); the others from their first step, their imports excluded.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from infra.local import fashion_mnist  # noqa: E402
from pipeline import images  # noqa: E402
from pipeline.dataset import records  # noqa: E402


def make_images(directory: str, count: int, size: int) -> list[str]:
    from PIL import Image

    pixels, labels = fashion_mnist.load("train")
    paths = []
    for i in range(count):
        folder = os.path.join(directory, f"class{labels[i]}")
        os.makedirs(folder, exist_ok=True)
        picture = Image.fromarray(pixels[i]).resize((size, size), Image.BILINEAR).convert("RGB")
        path = os.path.join(folder, f"{i:06d}.jpg")
        picture.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def naive_loop(paths: list[str], output: str) -> float:
    """What a one-off script does: every image in turn, validated, into one TFRecord file."""
    import tensorflow as tf

    started = time.perf_counter()
    with tf.io.TFRecordWriter(output) as writer:
        for path in sorted(paths):
            with open(path, "rb") as f:
                data = f.read()
            prepared = images.prepare_image(data)
            info = prepared.info
            writer.write(records.encode_example(records.ImageRecord(
                id=os.path.relpath(path, os.path.dirname(os.path.dirname(path))),
                image=prepared.data, image_format=info.format, height=info.height,
                width=info.width, channels=info.channels, label=0,
                label_name=os.path.basename(os.path.dirname(path)))))
    return time.perf_counter() - started


def beam_job(source: str, output: str, workers: int, *flags: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "--source", source, "--output", output,
                    "--num_readers", "2", "--direct_num_workers", str(workers), *flags],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": ROOT})
    return time.perf_counter() - started


def portable_job(source: str, output: str, workers: int, flags: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "--source", source, "--output", output,
                    "--num_readers", "2", "--direct_num_workers", str(workers), "--shared_filesystem",
                    *flags], cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": ROOT})
    return time.perf_counter() - started


def bytes_through_shuffle(paths: list[str], output: str, workers: int) -> float:
    """The other design: encode in one step, GroupByKey the bytes by shard, write each shard."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline import sharding
    from pipeline.dataset import tfrecord

    def encode(path):
        with open(path, "rb") as f:
            prepared = images.prepare_image(f.read())
        info, record_id = prepared.info, os.path.basename(path)
        example = records.encode_example(records.ImageRecord(
            id=record_id, image=prepared.data, image_format=info.format, height=info.height,
            width=info.width, channels=info.channels, label=0, label_name="x"))
        return sharding.shard_index(record_id, 20), (record_id, example)

    def write(element):
        index, items = element
        with open(os.path.join(output, f"shard-{index:05d}"), "wb") as f:
            tfrecord.write_records(f, [example for _, example in sorted(items)])

    os.makedirs(output)
    options = PipelineOptions(runner="DirectRunner", direct_running_mode="multi_processing",
                              direct_num_workers=workers)
    started = time.perf_counter()
    with beam.Pipeline(options=options) as p:
        _ = (p | beam.Create(sorted(paths)) | beam.Reshuffle() | beam.Map(encode)
               | beam.GroupByKey() | beam.Map(write))
    return time.perf_counter() - started


def tfds_writer(paths: list[str], output: str, workers: int) -> float:
    from benchmarks import tfds_peer

    return tfds_peer.build(os.path.dirname(os.path.dirname(paths[0])), output, workers)


VARIANTS = {"naive loop": lambda paths, source, out, workers, flags: naive_loop(paths, out + ".tfrecord"),
            "beam (ours)": lambda paths, source, out, workers, flags: beam_job(source, out, workers),
            "beam no index": lambda paths, source, out, workers, flags: beam_job(source, out, workers, "--no_index"),
            "beam portable": lambda paths, source, out, workers, flags: portable_job(source, out, workers, flags),
            "bytes shuffled": lambda paths, source, out, workers, flags: bytes_through_shuffle(paths, out, workers),
            "tfds writer": lambda paths, source, out, workers, flags: tfds_writer(paths, out, workers)}
COMPARED = {"direct": ["naive loop", "beam (ours)", "bytes shuffled", "tfds writer"],
            "portable": ["naive loop", "beam (ours)", "beam portable"],
            "index": ["beam (ours)", "beam no index"]}


def run_variant(name: str, source: str, out: str, workers: int, flags: list[str]) -> float:
    """Seconds of one variant, in a process of its own: an in-process Beam run leaves threads
    (gRPC) behind in its process that would slow the variants run after it."""
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--variant", name, "--source", source,
                             "--out", out, "--workers", str(workers), *[f"--flag={f}" for f in flags]],
                            cwd=ROOT, check=True, text=True, capture_output=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    return float(result.stdout.strip().splitlines()[-1])


def variant_main(args) -> None:
    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(args.source) for name in names)
    print(VARIANTS[args.variant](paths, args.source, args.out, args.workers, args.flag))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant (default 3)")
    parser.add_argument("--runner", choices=COMPARED, default="direct",
                        help="direct: our job on the DirectRunner against the naive loop, the "
                        "bytes-through-GroupByKey design and TFDS's writer; portable: our job through "
                        "Beam's job service against the DirectRunner and the naive loop; index: our job "
                        "with its Parquet index against --no_index")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)    # one run, in a child
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--flag", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return variant_main(args)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        source = os.path.join(tmp, "images")
        paths = make_images(source, args.images, args.size)
        mib = sum(os.path.getsize(p) for p in paths) / 2**20
        print(f"{args.images} JPEGs of {args.size}x{args.size} RGB, {mib:.1f} MiB, "
              f"{os.cpu_count()} cores, {args.workers} Beam workers", flush=True)
        with cluster_for(args.runner, tmp) as flags:
            seconds = rotate(COMPARED[args.runner], args, source, tmp, flags)
    report(seconds, args)


@contextlib.contextmanager
def cluster_for(runner: str, tmp: str):
    """The flags of a local Beam cluster (--runner portable), up for the whole benchmark."""
    if runner != "portable":
        yield []
        return
    from infra.local.beam_cluster import BeamCluster

    with BeamCluster(os.path.join(tmp, "cluster")) as cluster:
        yield cluster.flags()


def rotate(names: list[str], args, source: str, tmp: str, flags: list[str]) -> dict:
    """Each variant --repeats times, in a rotating order (this machine is noisy)."""
    seconds = {name: [] for name in names}
    for run in range(args.repeats):
        for name in names[run % len(names):] + names[:run % len(names)]:
            out = os.path.join(tmp, "out")
            seconds[name].append(run_variant(name, source, out, args.workers, flags))
            shutil.rmtree(out, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.remove(out + ".tfrecord")
            print(f"run {run + 1} {name:15s}: {seconds[name][-1]:6.1f} s "
                  f"{args.images / seconds[name][-1]:7.0f} images/s", flush=True)
    return seconds


def report(seconds: dict, args) -> None:
    median = {name: statistics.median(times) for name, times in seconds.items()}
    for name, value in median.items():
        print(f"median {name:15s}: {value:6.1f} s  {args.images / value:7.0f} images/s")
    ours = median["beam (ours)"]
    if args.runner == "index":
        print(f"ratio with index / without: {ours / median['beam no index']:.3f}x: the index costs "
              f"{(ours / median['beam no index'] - 1) * 100:.1f} % of the job (goal <= 5 %)")
        return
    if args.runner == "portable":
        portable = median["beam portable"]
        print(f"ratio portable / naive: {median['naive loop'] / portable:.2f}x (goal >= 1.5 at 256 px); "
              f"portable / DirectRunner: {ours / portable:.2f}x; DirectRunner / naive: "
              f"{median['naive loop'] / ours:.2f}x")
        return
    print(f"ratio beam / naive: {median['naive loop'] / ours:.2f}x (goal >= 1.7); beam / "
          f"bytes-through-GroupByKey: {median['bytes shuffled'] / ours:.2f}x; beam / TFDS writer: "
          f"{median['tfds writer'] / ours:.2f}x (goal >= 1.0)")


if __name__ == "__main__":
    main()
