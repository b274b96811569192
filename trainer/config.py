"""The trainer's flags. Processes and hosts are horovodrun's business, not ours."""
from __future__ import annotations

import argparse

DESCRIPTION = """Train an image classifier on a published dataset with synchronous data-parallel
SGD. Launch one process per GPU (or CPU slot) with horovodrun, e.g.

  horovodrun -np 2 -H localhost:2 python -m trainer --dataset s3://bucket/datasets/fmnist \\
      --checkpoint-dir s3://bucket/runs/fmnist

Rank 0 writes a checkpoint every epoch; restarting with the same --checkpoint-dir resumes from
the newest complete one. S3 endpoint and credentials come from boto3's usual chain
(AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...) or --s3-endpoint-url."""


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--dataset", required=True, help="published dataset: directory (s3:// or local) "
                   "holding manifest.json")
    p.add_argument("--checkpoint-dir", required=True, help="where checkpoints go (s3:// or local); "
                   "reusing it resumes")
    p.add_argument("--model-dir", help="final SavedModel (default: <checkpoint-dir>/model)")
    p.add_argument("--report", help="JSON report (default: <checkpoint-dir>/report.json)")
    p.add_argument("--model", default="cnn", help="model name (see trainer/models.py; default cnn)")
    p.add_argument("--epochs", type=positive(int), default=10)
    p.add_argument("--batch-size", type=positive(int), default=64, help="per process (default 64)")
    p.add_argument("--lr", type=positive(float), default=0.025,
                   help="learning rate of one process; scaled by the number of processes")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear warm-up to the scaled rate (Goyal et al. 2017; default 1)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips in augmentation")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cache-dir", default="/tmp/trainer-cache",
                   help="local directory shards are staged into (default %(default)s)")
    p.add_argument("--keep-checkpoints", type=positive(int), default=3)
    p.add_argument("--log-every", type=positive(float), default=10.0, help="seconds between progress lines")
    p.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (default: boto3's configuration)")
    return p
