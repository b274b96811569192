"""Fashion-MNIST into a Cassandra table, one row per image: (id uuid, label text, image blob,
split text). Test images keep their canonical split; training rows leave `split` empty so the
ingestion job's hash split carves validation from them (as infra/local/fashion_mnist.py does on S3).

    python -m infra.local.cassandra_load --contact 127.0.0.1:9042 [--keyspace demo] [--table images]
                                   [--limit N] [--protocol-version 3]
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Iterable, Iterator

from infra.local import fashion_mnist

# Stable ids: the same image gets the same uuid on every load.
NAMESPACE = uuid.UUID("5b0f4c1e-7a43-4c1a-9a57-0f6c3f1f1d2a")
SCHEMA = ("CREATE TABLE IF NOT EXISTS {ks}.{table} "
          "(id uuid PRIMARY KEY, label text, image blob, split text)")


def image_id(split: str, index: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"fashion-mnist/{split}/{index}")


def create_table(session, keyspace: str, table: str, replication: int = 1) -> None:
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
                    f"{{'class': 'SimpleStrategy', 'replication_factor': {replication}}}")
    session.execute(SCHEMA.format(ks=keyspace, table=table))


def insert_rows(session, keyspace: str, table: str, rows: Iterable[tuple], log=print,
                concurrency: int = 32, chunk: int = 2000) -> int:
    """Insert (id, label, image, split) tuples with many requests in flight; returns the count."""
    from cassandra.concurrent import execute_concurrent_with_args

    insert = session.prepare(f"INSERT INTO {keyspace}.{table} (id, label, image, split) VALUES (?, ?, ?, ?)")
    started, done, batch = time.monotonic(), 0, []
    for row in rows:
        batch.append(row)
        if len(batch) == chunk:
            done += _insert(session, insert, batch, concurrency, execute_concurrent_with_args)
            batch = []
            log(f"loaded {done} rows ({done / (time.monotonic() - started):.0f} rows/s)")
    if batch:
        done += _insert(session, insert, batch, concurrency, execute_concurrent_with_args)
    log(f"loaded {done} rows into {keyspace}.{table} in {time.monotonic() - started:.0f} s")
    return done


def _insert(session, statement, batch, concurrency, execute_concurrent_with_args) -> int:
    for ok, result in execute_concurrent_with_args(session, statement, batch, concurrency=concurrency,
                                                   raise_on_first_error=True):
        assert ok, result
    return len(batch)


def fashion_mnist_rows(limit: int | None = None) -> Iterator[tuple]:
    """(id, class name, PNG bytes, split) for the first `limit` images of each split (all: 70k)."""
    for split in ("train", "test"):
        images, labels = fashion_mnist.load(split)
        n = len(labels) if limit is None else min(limit, len(labels))
        for i in range(n):
            yield (image_id(split, i), fashion_mnist.CLASSES[labels[i]],
                   fashion_mnist.png_bytes(images[i]), "test" if split == "test" else "")


def load(session, keyspace: str, table: str, limit: int | None = None, log=print) -> int:
    create_table(session, keyspace, table)
    return insert_rows(session, keyspace, table, fashion_mnist_rows(limit), log=log)


def main(argv=None) -> int:
    from pipeline.sources.cassandra.config import CassandraConfig
    from pipeline.sources.cassandra.connection import connect, connection_problem

    p = argparse.ArgumentParser(prog="python -m infra.local.cassandra_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contact", default="127.0.0.1:9042", help="host:port (default: %(default)s)")
    p.add_argument("--keyspace", default="demo")
    p.add_argument("--table", default="fashion_mnist")
    p.add_argument("--limit", type=int, help="images per split (default: all 60k + 10k)")
    p.add_argument("--protocol-version", type=int, default=3, help="(default: %(default)s, for 2.1)")
    args = p.parse_args(argv)
    host, _, port = args.contact.rpartition(":")
    config = CassandraConfig(hosts=(host,), port=int(port), keyspace=args.keyspace,
                             table=args.table, protocol_version=args.protocol_version)
    try:
        cluster, session = connect(config)
    except Exception as e:
        print(f"cassandra_load: error: {connection_problem(e, config)}", file=sys.stderr)
        return 2
    try:
        load(session, args.keyspace, args.table, args.limit)
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
