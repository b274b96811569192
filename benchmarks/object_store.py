"""The embedded S3 server (SeaweedFS) against moto's server (the mock it replaced: the baseline),
both started here and driven alike in this one run by the same boto3 client settings, 8 threads:
  small   N PUTs, then N GETs, of 3 KB objects (the demo's images are ~1-3 KB PNGs)
  list    one listing of the N keys, 1,000 per page
  large   20 PUTs, then 20 GETs, of 8 MiB objects (shards, checkpoints)
Both check request signatures (SeaweedFS its generated identity, moto through its IAM).
Printed: objects/s and MB/s for each server and the ratio SeaweedFS / moto.

    python -m benchmarks.object_store [--objects 5000] [--large 20] [--threads 8]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import tempfile
import time

import boto3
from botocore.config import Config

from infra.local.s3server import LocalS3

MB, MiB = 1e6, 2**20
BASELINE = "moto"


def client(server: LocalS3, threads: int):
    return boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=server.credentials["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=server.credentials["AWS_SECRET_ACCESS_KEY"],
                        config=Config(max_pool_connections=2 * threads))


def timed(threads: int, work, items) -> float:
    """Seconds to run work(item) for every item on `threads` threads."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(work, items):
            pass
    return time.perf_counter() - started


def measure(server: LocalS3, args, small: dict, large: dict) -> dict:
    """{phase: (objects/s, MB/s)} for one server."""
    s3 = client(server, args.threads)
    s3.create_bucket(Bucket="bench")

    def put(item):
        s3.put_object(Bucket="bench", Key=item[0], Body=item[1])

    def get(item):
        if len(s3.get_object(Bucket="bench", Key=item[0])["Body"].read()) != len(item[1]):
            raise RuntimeError(f"{item[0]}: read back another length than was written")

    results = {}
    for name, objects in (("small", small), ("large", large)):
        size = sum(len(b) for b in objects.values())
        for verb, work in (("PUT", put), ("GET", get)):
            seconds = timed(args.threads, work, list(objects.items()))
            results[f"{name} {verb}"] = (len(objects) / seconds, size / MB / seconds)
    started = time.perf_counter()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="small/")
    listed = sum(page.get("KeyCount", 0) for page in pages)
    seconds = time.perf_counter() - started
    if listed != len(small):
        raise RuntimeError(f"listed {listed} of {len(small)} small objects")
    results["list"] = (listed / seconds, float("nan"))         # keys, not bytes
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.object_store", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=5000, help="small objects (default %(default)s)")
    p.add_argument("--small-bytes", type=int, default=3000)
    p.add_argument("--large", type=int, default=20, help="8 MiB objects (default %(default)s)")
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args(argv)
    small = {f"small/{i:06d}.png": os.urandom(args.small_bytes) for i in range(args.objects)}
    large = {f"large/{i:03d}.bin": os.urandom(8 * MiB) for i in range(args.large)}
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in (BASELINE, "seaweedfs"):
            with LocalS3(backend=backend, log_path=os.path.join(tmp, f"{backend}.log")) as server:
                print(f"{server.server.name}: {args.objects} x {args.small_bytes} B, a listing, "
                      f"{args.large} x 8 MiB, {args.threads} threads ...", flush=True)
                rates[backend] = measure(server, args, small, large)
    print(f"\n{'phase':<10} {'moto objects/s':>15} {'MB/s':>8} {'SeaweedFS objects/s':>20} {'MB/s':>8} "
          f"{'ratio':>6}")
    for phase, (base_rate, base_mb) in rates[BASELINE].items():
        rate, mb = rates["seaweedfs"][phase]
        print(f"{phase:<10} {base_rate:>15,.0f} {base_mb:>8,.1f} {rate:>20,.0f} {mb:>8,.1f} "
              f"{rate / base_rate:>6.2f}")
    print("ratio = SeaweedFS / moto, objects per second (the same as MB/s for a phase); "
          f"measured {time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
