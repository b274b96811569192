"""Memory at scale: the real ingestion job on a synthetic labels file of --rows lines, run at
--rows / 10 first and then at --rows, and the peak memory (RSS) of the launcher and of every
worker process in each run. A step that gathers the input in one process (the whole labels
file in one worker, the whole quarantine list in one side input) grows ~10x from the small run
to the large one; bounded steps stay about flat. Prints both peaks and their ratio.

    python benchmarks/ingest_scale.py [--rows 1000000] [--images 20000] [--bad 100000] [--format parquet]

The source (local disk): --images distinct tiny PNGs (8x8) for the first rows, a labels CSV of
--rows lines, the last --bad of them with a class outside --classes; every row beyond the
images names an object that does not exist, so it is quarantined (as `no image`, which the
join finds first). Nearly every row ends in the quarantine: the labels file and the quarantine
are what grow. The DirectRunner fuses steps into stages that share a worker process, and its
launcher holds the data between stages (its shuffle), so memory is reported per process, not
per step.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_png(i: int) -> bytes:
    from PIL import Image

    pixels = bytes((i >> shift) & 255 for shift in (0, 8, 16)) * 21 + bytes([i % 251])
    buffer = io.BytesIO()
    Image.frombytes("L", (8, 8), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


PARQUET_ROW_GROUP = 100_000


def make_source(root: str, rows: int, images: int, bad: int, labels_format: str = "csv") -> str:
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    for i in range(images):
        with open(os.path.join(root, "img", f"{i:07d}.png"), "wb") as f:
            f.write(tiny_png(i))
    if labels_format == "parquet":
        write_parquet_labels(os.path.join(root, "labels.parquet"), rows, bad)
        return root
    with open(os.path.join(root, "labels.csv"), "w") as f:
        f.write("key,label,split\n")
        for i in range(rows):
            label = "unlisted" if i >= rows - bad else f"c{i % 2}"
            f.write(f"img/{i:07d}.png,{label},\n")
    return root


def write_parquet_labels(path: str, rows: int, bad: int) -> None:
    """The same rows as the CSV's, as a Parquet table, written one row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("key", pa.string()), ("label", pa.string()), ("split", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, PARQUET_ROW_GROUP):
            numbers = range(start, min(start + PARQUET_ROW_GROUP, rows))
            writer.write_table(pa.table({
                "key": [f"img/{i:07d}.png" for i in numbers],
                "label": ["unlisted" if i >= rows - bad else f"c{i % 2}" for i in numbers],
                "split": [""] * len(numbers)}, schema=schema), row_group_size=PARQUET_ROW_GROUP)


def tree_rss(pid: int) -> dict[int, int]:
    """RSS in bytes of `pid` and every descendant, by pid."""
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for p in processes:
        try:
            found[p.pid] = p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return found


def ingest(source: str, output: str) -> tuple[float, int, list[int]]:
    """Run the job; (seconds, launcher peak RSS, worker peaks sorted)."""
    command = [sys.executable, "-m", "pipeline", "--source", source, "--output", output,
               "--classes", "c0,c1", "--splits", "train:0.9,test:0.1", "--num_readers", "2",
               "--log_file", os.path.join(output + "-logs", "ingest.log")]
    seconds, out, launcher, workers = watched(command)
    print("   ", out.strip().splitlines()[-1][:300])
    return seconds, launcher, workers


def watched(command: list[str]) -> tuple[float, str, int, list[int]]:
    """Run `command`, sampling the RSS of it and its descendants every 0.25 s; (seconds, its
    output, the launcher's peak RSS, the other processes' peaks sorted, largest first)."""
    started = time.monotonic()
    job = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def watch():
        while not done.is_set():
            for pid, rss in tree_rss(job.pid).items():
                peaks[pid] = max(peaks.get(pid, 0), rss)
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = job.communicate()
    done.set()
    watcher.join()
    if job.returncode:
        sys.exit(f"{command[2]} failed:\n{out[-3000:]}")
    workers = sorted((rss for pid, rss in peaks.items() if pid != job.pid), reverse=True)
    return time.monotonic() - started, out, peaks.get(job.pid, 0), workers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--bad", type=int, default=100_000)
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="of the labels file")
    args = p.parse_args()
    mib = 2**20
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for rows in (args.rows // 10, args.rows):
            images, bad = min(args.images, rows // 10), args.bad * rows // args.rows
            source = make_source(os.path.join(work, f"src-{rows}"), rows, images, bad, args.format)
            print(f"{rows:,} label rows, {images:,} images, {bad:,} bad labels:", flush=True)
            seconds, launcher, workers = ingest(source, os.path.join(work, f"out-{rows}"))
            results[rows] = (launcher, workers[0] if workers else 0)
            print(f"  {seconds:.0f} s; peak RSS launcher {launcher / mib:.0f} MiB, largest worker "
                  f"process {results[rows][1] / mib:.0f} MiB (all processes: "
                  f"{', '.join(f'{w / mib:.0f}' for w in workers)} MiB)", flush=True)
    small, large = results[args.rows // 10], results[args.rows]
    print(f"ratio largest worker peak {args.rows:,} rows / {args.rows // 10:,} rows = "
          f"{large[1] / small[1]:.2f} (10x the rows; bounded steps: about 1)")
    print(f"ratio launcher peak = {large[0] / small[0]:.2f}")


if __name__ == "__main__":
    main()
