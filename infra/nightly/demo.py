"""`python -m infra.nightly --demo`: the nightly on the embedded default.

Uses the S3 server that AWS_ENDPOINT_URL_S3 names (e.g. one started by `python -m infra.local.stack up`,
so successive demo nights build on each other: the second one warm-starts and compares), or
starts a private local S3 server for this one run. Raw data is Fashion-MNIST (`--limit` images
per split) under s3://nightly/raw; the fixed evaluation split is the test split of
s3://nightly/datasets/fashion_mnist-eval, published once from the same raw data.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from infra.local import fashion_mnist

from infra.nightly import config as nightly_config
from infra.local.s3server import LocalS3
from pipeline.dataset.local_paths import user_cache_dir
from pipeline.dataset.naming import MANIFEST_NAME
from pipeline.dataset.storage import Storage, join

ROOT = "s3://nightly"


def demo_config(raw: dict) -> nightly_config.NightlyConfig:
    return nightly_config.from_dict({
        "name": "fashion_mnist", "root": ROOT,
        "ingest": {"source": raw["images"], "labels_file": raw["labels"], "classes": raw["classes"],
                   "args": ["--num_readers", "2", "--fetch_threads", "2"]},
        "train": {"launcher": "local", "processes": 2, "epochs": 4, "batch_size": 16,
                  "warm_start": True, "args": ["--warmup-epochs", "0.5", "--no-augment"]},  # few steps: augmentation only slows them
        "evaluation": {"dataset": f"{ROOT}/datasets/fashion_mnist-eval", "split": "test"},
        "promotion": {"tolerance": 0.01}, "lock": {"ttl_seconds": 120}}, "<demo>")


def seed(storage: Storage, limit: int) -> dict:
    raw = join(ROOT, "raw")
    urls = {"images": join(raw, "images"), "labels": join(raw, "labels.csv"),
            "classes": join(raw, "classes.txt")}
    storage.ensure_bucket(ROOT)
    if not storage.exists(urls["labels"]):
        urls = fashion_mnist.upload(storage, raw, limit=limit)      # its progress line on stdout
    evaluation = f"{ROOT}/datasets/fashion_mnist-eval"
    if not storage.exists(join(evaluation, MANIFEST_NAME)):
        code = subprocess.call([sys.executable, "-m", "pipeline", "--source", urls["images"],
                                "--labels_file", urls["labels"], "--classes", urls["classes"],
                                "--output", evaluation, "--num_readers", "2",
                                "--splits", "train:0.9,validation:0.1"])   # test: the labelled test rows
        if code != 0:
            raise SystemExit(f"nightly demo: publishing the evaluation dataset failed (exit {code})")
    return urls


def main(args, run_night) -> int:
    with contextlib.ExitStack() as stack:
        if not os.environ.get("AWS_ENDPOINT_URL_S3"):
            server = stack.enter_context(LocalS3())
            os.environ.update(server.env())
            print(f"nightly demo: private local S3 server on {server.endpoint_url} "
                  "(state is lost at exit; `python -m infra.local.stack up` keeps one running)", flush=True)
        raw = seed(Storage(), args.limit)
        return run_night(demo_config(raw), args.date, args.report, args.cache_dir or user_cache_dir("nightly"))
