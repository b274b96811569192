"""Labelled images from a Cassandra table: one row per image, (id, label, image blob[, split]).

    ReadRows(config):  Create ─ SplitRing ─ Reshuffle ─ ReadRange ─> one dict per row

SplitRing cuts the token ring (from the driver's token map) into pieces that never cross a
vnode boundary, so each piece is owned by one replica set; ReadRange reads a piece with
`token(pk) > lo AND token(pk) <= hi`, paged. The ring's wrap-around range becomes two pieces.
A transient error (timeout, unavailable, node restarting, connection refused) restarts the
piece from the last token it yielded, skipping the rows already yielded at that token, so
every row is read exactly once; a piece that keeps failing fails the job, naming the range.

CQL stays portable from Cassandra 2.1 to 5.x: the schema comes from the driver's metadata
(no system_schema queries), no SELECT JSON, no date types.
"""
from __future__ import annotations

import logging
import math
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.sources.cassandra.config import CassandraConfig, CassandraSourceError
from pipeline.sources.cassandra.connection import (connect, connection_problem, quiet_driver,
                                                   table_metadata, token_bounds)
from pipeline.sources.cassandra.ring import split_ring

log = logging.getLogger("pipeline")

TARGET_SPLIT_BYTES = 32 * 2**20      # default splits: about this much data each ...
SPLITS_PER_WORKER = 4                # ... and at least this many per worker
PROGRESS_EVERY_S = 10.0


# ---------------------------------------------------------------- the token ring

def estimated_bytes(session, config: CassandraConfig, bounds: tuple[int, int]) -> int | None:
    """The table's size from system.size_estimates (Cassandra >= 2.1.5; per node, so the
    coordinator's ranges are scaled up to the whole ring), None where it is not available."""
    try:
        rows = list(session.execute(
            "SELECT range_start, range_end, mean_partition_size, partitions_count "
            "FROM system.size_estimates WHERE keyspace_name = %s AND table_name = %s",
            (config.keyspace, config.table)))
    except Exception:  # older servers have no such table
        return None
    size = bounds[1] - bounds[0]
    covered = sum((int(end) - int(start)) % size for start, end, _, _ in rows)
    total = sum(mean * count for _, _, mean, count in rows)
    return int(total * size / covered) if covered and total else None


def default_splits(config: CassandraConfig, estimate: int | None) -> int:
    by_size = math.ceil(estimate / TARGET_SPLIT_BYTES) if estimate else 0
    return max(SPLITS_PER_WORKER * config.workers, by_size)


# ---------------------------------------------------------------- reading

def transient_errors() -> tuple[type, ...]:
    """Errors worth retrying: the node is slow, down, restarting or overloaded."""
    from cassandra import (CoordinationFailure, OperationTimedOut, ReadTimeout, Unavailable)
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException, ConnectionShutdown
    from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage, ServerError

    return (OperationTimedOut, ReadTimeout, Unavailable, CoordinationFailure, NoHostAvailable,
            ConnectionException, ConnectionShutdown, IsBootstrappingErrorMessage,
            OverloadedErrorMessage, ServerError, ConnectionError)


def backoff(config: CassandraConfig, attempt: int) -> float:
    return min(config.max_backoff_s, config.backoff_s * 2 ** attempt)


def id_text(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return str(value)


class SplitRing(beam.DoFn):
    """None -> (lo, hi] token segments covering the ring once (computed on a worker at run time,
    from the ring as it is then)."""

    def __init__(self, config: CassandraConfig):
        self.config = config

    def process(self, _):
        cluster, session = self._connect()
        try:
            bounds = token_bounds(cluster)
            tokens = [t.value for t in cluster.metadata.token_map.ring]
            splits = self.config.splits or default_splits(
                self.config, estimated_bytes(session, self.config, bounds))
        finally:
            cluster.shutdown()
        segments = split_ring(tokens, splits, bounds)
        log.info("cassandra: %s split into %d token ranges (%d ring tokens, %d requested)",
                 self.config.url, len(segments), len(tokens), splits)
        yield from segments

    def _connect(self):
        """Connect, riding out a node that is restarting; a host that stays away fails the job."""
        transient = transient_errors()
        for attempt in range(self.config.retries + 1):
            try:
                with quiet_driver():
                    return connect(self.config)
            except transient as e:
                if attempt == self.config.retries:
                    raise CassandraSourceError(connection_problem(e, self.config)) from None
                time.sleep(backoff(self.config, attempt))


class ReadRange(beam.DoFn):
    """(lo, hi] -> one row dict per row whose token is in the range, each exactly once."""

    def __init__(self, config: CassandraConfig):
        self.config = config
        self.rows = Metrics.counter("cassandra", "rows_read")
        self.retried = Metrics.counter("cassandra", "range_retries")

    def setup(self):
        self.cluster = self.session = None
        self.done_ranges = self.total_rows = 0
        self.started = self.last_log = time.monotonic()

    def teardown(self):
        self._disconnect()

    def _disconnect(self):
        if self.cluster is not None:
            self.cluster.shutdown()
        self.cluster = self.session = None

    def _connect(self):
        if self.session is not None:
            return
        self._disconnect()
        with quiet_driver():     # a failure is logged once, by process()
            self.cluster, self.session = connect(self.config)
        table = table_metadata(self.cluster, self.config)
        pk = ", ".join(_quote(c.name) for c in table.partition_key)
        columns = ", ".join(_quote(c) for c in self.config.columns.values())
        select = f"SELECT token({pk}), {columns} FROM {_quote(self.config.keyspace)}.{_quote(self.config.table)}"
        self.first = self.session.prepare(f"{select} WHERE token({pk}) > ? AND token({pk}) <= ?")
        self.resume = self.session.prepare(f"{select} WHERE token({pk}) >= ? AND token({pk}) <= ?")
        for statement in (self.first, self.resume):
            statement.fetch_size = self.config.page_size

    def process(self, segment):
        from cassandra.cluster import NoHostAvailable

        lo, hi = segment
        last, seen_at_last = None, 0     # the last token yielded, and how many rows had it
        transient, count = transient_errors(), 0
        for attempt in range(self.config.retries + 1):
            try:
                self._connect()
                statement = self.first.bind((lo, hi)) if last is None else self.resume.bind((last, hi))
                skip = 0 if last is None else seen_at_last
                for row in self.session.execute(statement):
                    token = row[0]
                    if token == last and skip:
                        skip -= 1        # already yielded before the retry
                        continue
                    seen_at_last = seen_at_last + 1 if token == last else 1
                    last, count = token, count + 1
                    yield self._record(row)
                self._progress(count)
                return
            except transient as e:
                error = e
                if attempt == self.config.retries:
                    break
                self.retried.inc()
                delay = backoff(self.config, attempt)
                if isinstance(e, NoHostAvailable):
                    self._disconnect()  # a fresh Cluster finds a restarted node at once
                log.warning("cassandra: range (%d, %d] attempt %d failed (%s); retrying from token %s in %.1f s",
                            lo, hi, attempt + 1, _one_line(error), last if last is not None else lo, delay)
                time.sleep(delay)
        raise CassandraSourceError(f"reading token range ({lo}, {hi}] of {self.config.keyspace}."
                                   f"{self.config.table} failed {self.config.retries + 1} times; "
                                   f"last error: {_one_line(error)}")

    def _record(self, row) -> dict:
        record_id = id_text(row[1])
        image = bytes(row[3] or b"")     # null -> empty: quarantined as "empty image"
        return {"id": record_id, "source": f"{self.config.url}/{record_id}",
                "label": None if row[2] is None else str(row[2]),
                "split": (row[4] or "") if self.config.split_column else "",
                "image": image, "size": len(image), "url": None}

    def _progress(self, rows: int):
        self.done_ranges += 1
        self.total_rows += rows
        self.rows.inc(rows)
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_EVERY_S:
            log.info("cassandra: worker read %d rows from %d ranges in %.0f s (%.0f rows/s)",
                     self.total_rows, self.done_ranges, now - self.started,
                     self.total_rows / max(now - self.started, 1e-9))
            self.last_log = now


def _quote(name: str) -> str:
    from cassandra.metadata import protect_name

    return protect_name(name)


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


class ReadRows(beam.PTransform):
    """PBegin -> one row dict per table row (the shape pipeline/sources/rows.py describes):
    {"id", "source", "label", "split", "image" (bytes, never None), "size", "url": None}."""

    def __init__(self, config: CassandraConfig):
        super().__init__()
        self.config = config

    def expand(self, pbegin):
        return (pbegin
                | "Start" >> beam.Create([None])
                | "SplitRing" >> beam.ParDo(SplitRing(self.config))
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadRange" >> beam.ParDo(ReadRange(self.config)))
