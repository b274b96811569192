"""Rows/s of the Beam Cassandra source against a plain driver token-range scan, same run.

    python benchmarks/cassandra_source.py [--rows 20000] [--image-kb 3] [--contact host:port]

Loads N rows of ~3 KB PNG blobs into a table (a local Cassandra 2.1 is started unless
--contact names one), then reads the whole table twice:
  baseline  one process, the driver alone: the same token ranges read one after another, paged
  beam      ReadRows on the DirectRunner (multi-process, --workers) counting the rows
and prints both rates and their ratio: "while reading" is rows / (last row seen - first row
seen) inside the pipeline, "end to end" the pipeline's wall-clock, start-up of the runner's
worker processes included (an empty pipeline's wall-clock is printed beside it).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from infra.local import cassandra_load  # noqa: E402
from infra.local.cassandra import PROTOCOL_VERSION, LocalCassandra  # noqa: E402
from pipeline.sources.cassandra.ring import split_ring  # noqa: E402
from pipeline.sources.cassandra.config import CassandraConfig  # noqa: E402
from pipeline.sources.cassandra.connection import connect, token_bounds  # noqa: E402
from pipeline.sources.cassandra.read import ReadRows, default_splits, estimated_bytes  # noqa: E402

KEYSPACE, TABLE = "bench", "images"


def noise_pngs(count: int, kilobytes: float) -> list[bytes]:
    """Grey noise PNGs of about `kilobytes` each (noise does not compress)."""
    from PIL import Image

    side = int((kilobytes * 1024) ** 0.5)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side), np.uint8), mode="L").save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def load(config: CassandraConfig, rows: int, kilobytes: float) -> int:
    images = noise_pngs(64, kilobytes)
    cluster, session = connect(config)
    try:
        session.execute(f"DROP TABLE IF EXISTS {KEYSPACE}.{TABLE}")
        cassandra_load.create_table(session, KEYSPACE, TABLE)
        data = ((uuid.uuid4(), f"class{i % 10}", images[i % len(images)], "") for i in range(rows))
        cassandra_load.insert_rows(session, KEYSPACE, TABLE, data, log=lambda *_: None)
    finally:
        cluster.shutdown()
    return sum(len(i) for i in images) // len(images)


def driver_scan(config: CassandraConfig) -> tuple[int, float]:
    """The baseline: every token range read in turn by the driver, paged, rows touched."""
    cluster, session = connect(config)
    try:
        bounds = token_bounds(cluster)
        tokens = [t.value for t in cluster.metadata.token_map.ring]
        splits = config.splits or default_splits(config, estimated_bytes(session, config, bounds))
        query = session.prepare(f"SELECT token(id), id, label, image, split FROM {KEYSPACE}.{TABLE} "
                                "WHERE token(id) > ? AND token(id) <= ?")
        query.fetch_size = config.page_size
        started, count = time.monotonic(), 0
        for lo, hi in split_ring(tokens, splits, bounds):
            for row in session.execute(query.bind((lo, hi))):
                count += len(row[3]) > 0
        return count, time.monotonic() - started
    finally:
        cluster.shutdown()


def span(stamps) -> tuple[float, float, int]:
    """(first, last, count) of (time, 1) pairs; safe on partial results (Beam re-combines)."""
    first, last, count = float("inf"), float("-inf"), 0
    for a, b, n in stamps:
        first, last, count = min(first, a), max(last, b), count + n
    return first, last, count


def beam_options(workers: int):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                            f"--direct_num_workers={workers}"])


def empty_pipeline(workers: int) -> float:
    """Wall-clock of a pipeline that does nothing: the runner's own start-up and tear-down."""
    import apache_beam as beam

    started = time.monotonic()
    with beam.Pipeline(options=beam_options(workers)) as p:
        _ = p | beam.Create([None]) | beam.Reshuffle() | beam.Map(lambda x: x)
    return time.monotonic() - started


def beam_scan(config: CassandraConfig, workers: int) -> tuple[int, float, float]:
    """(rows, wall-clock seconds, seconds from the first row read to the last)."""
    import apache_beam as beam

    out = os.path.join("/tmp", f"cassandra-bench-{os.getpid()}")
    started = time.monotonic()
    with beam.Pipeline(options=beam_options(workers)) as p:
        _ = (p | ReadRows(config)
               | "Stamp" >> beam.Map(lambda row: (time.time(), time.time(), 1))
               | beam.CombineGlobally(span)
               | beam.Map(lambda s: open(out, "w").write(f"{s[0]} {s[1]} {s[2]}")))
    elapsed = time.monotonic() - started
    with open(out) as f:
        first, last, count = f.read().split()
    os.remove(out)
    return int(count), elapsed, float(last) - float(first)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--image-kb", type=float, default=3.0)
    p.add_argument("--contact", help="host:port of a running Cassandra (default: start a local one)")
    p.add_argument("--workers", type=int, default=2, help="Beam worker processes")
    p.add_argument("--splits", type=int, default=0, help="token ranges (default: the source's rule)")
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=2, help="alternate baseline/beam runs this often")
    args = p.parse_args(argv)

    server = None if args.contact else LocalCassandra(heap="512M").start()
    host, port = (args.contact.rsplit(":", 1) if args.contact else (server.host, server.port))
    config = CassandraConfig(hosts=(host,), port=int(port), keyspace=KEYSPACE, table=TABLE,
                             protocol_version=PROTOCOL_VERSION, splits=args.splits,
                             workers=args.workers, page_size=args.page_size)
    try:
        t = time.monotonic()
        size = load(config, args.rows, args.image_kb)
        print(f"loaded {args.rows} rows of {size} B images in {time.monotonic() - t:.1f} s", flush=True)
        driver_scan(config)                         # warm the server's caches once
        rates = {"baseline": [], "beam": [], "beam end to end": []}
        for _ in range(args.repeat):
            count, seconds = driver_scan(config)
            assert count == args.rows, f"the driver scan read {count} rows, not {args.rows}"
            rates["baseline"].append(count / seconds)
            print(f"  driver scan {count} rows in {seconds:5.1f} s = {count / seconds:7.0f} rows/s", flush=True)
            count, wall, reading = beam_scan(config, args.workers)
            assert count == args.rows, f"the Beam source read {count} rows, not {args.rows}"
            rates["beam"].append(count / reading)
            rates["beam end to end"].append(count / wall)
            print(f"  Beam source {count} rows in {reading:5.1f} s reading = {count / reading:7.0f} rows/s "
                  f"({wall:.1f} s = {count / wall:.0f} rows/s with the runner's start-up)", flush=True)
            print(f"  (an empty pipeline on the same runner: {empty_pipeline(args.workers):.1f} s)", flush=True)
    finally:
        if server:
            server.remove()
    base, beam_rate, whole = (max(rates[k]) for k in ("baseline", "beam", "beam end to end"))
    print(f"plain driver token-range scan: {base:.0f} rows/s; Beam source ({args.workers} workers): "
          f"{beam_rate:.0f} rows/s while reading, ratio {beam_rate / base:.2f}x; end to end "
          f"{whole:.0f} rows/s, ratio {whole / base:.2f}x (best of {args.repeat} each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
