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

import contextlib
import logging
import math
import os
import ssl
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.cassandra_ring import TOKEN_BOUNDS, split_ring

log = logging.getLogger("pipeline")

SCHEME = "cassandra://"
DEFAULT_PORT = 9042
CREDENTIALS_ENV = ("CASSANDRA_USERNAME", "CASSANDRA_PASSWORD")
TARGET_SPLIT_BYTES = 32 * 2**20      # default splits: about this much data each ...
SPLITS_PER_WORKER = 4                # ... and at least this many per worker
PROGRESS_EVERY_S = 10.0
IMAGE_TYPES = ("blob",)


class CassandraSourceError(Exception):
    """A Cassandra source that cannot be used or read; the message is one line naming it."""


@dataclass(frozen=True)
class CassandraConfig:
    hosts: tuple[str, ...]
    keyspace: str
    table: str
    port: int = DEFAULT_PORT
    id_column: str = "id"
    label_column: str = "label"
    image_column: str = "image"
    split_column: str | None = None
    consistency: str = "LOCAL_ONE"
    local_dc: str | None = None
    protocol_version: int | None = None       # None: the driver negotiates
    credentials_file: str | None = None       # else env CASSANDRA_USERNAME / CASSANDRA_PASSWORD
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    splits: int = 0                           # 0: from workers and size estimates
    workers: int = 1
    page_size: int = 1000
    retries: int = 8
    backoff_s: float = 0.5
    max_backoff_s: float = 15.0
    request_timeout_s: float = 30.0

    @property
    def url(self) -> str:
        return f"{SCHEME}{','.join(self.hosts)}:{self.port}/{self.keyspace}/{self.table}"

    @property
    def columns(self) -> dict[str, str]:
        """flag name -> column, for the columns the source reads."""
        named = {"id": self.id_column, "label": self.label_column, "image": self.image_column}
        return {**named, "split": self.split_column} if self.split_column else named


def parse_source_url(url: str) -> tuple[tuple[str, ...], int, str, str]:
    """cassandra://host1,host2[:port]/keyspace/table -> (hosts, port, keyspace, table)."""
    if not url.startswith(SCHEME):
        raise CassandraSourceError(f"--source {url}: not a {SCHEME} URL")
    netloc, _, path = url[len(SCHEME):].partition("/")
    hosts_part, port = netloc, DEFAULT_PORT
    if ":" in netloc.rsplit(",", 1)[-1]:
        hosts_part, _, port_text = netloc.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise CassandraSourceError(f"--source {url}: bad port {port_text!r}")
        port = int(port_text)
    hosts = tuple(h.strip() for h in hosts_part.split(",") if h.strip())
    parts = [p for p in path.split("/") if p]
    if not hosts or len(parts) != 2:
        raise CassandraSourceError(f"--source {url}: expected {SCHEME}host1,host2:port/keyspace/table")
    return hosts, port, parts[0], parts[1]


def config_from(options, source_url: str) -> CassandraConfig:
    """The source's settings from the job's flags (IngestOptions' --cassandra_* block)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, WorkerOptions

    from pipeline.options import IngestOptions

    o = options.view_as(IngestOptions)
    hosts, port, keyspace, table = parse_source_url(source_url)
    for flag in ("splits", "page_size", "retries"):
        if getattr(o, f"cassandra_{flag}") < (1 if flag == "page_size" else 0):
            raise CassandraSourceError(f"--cassandra_{flag} {getattr(o, f'cassandra_{flag}')}: too small")
    if o.cassandra_consistency.upper() not in _consistency_levels():
        raise CassandraSourceError(f"--cassandra_consistency {o.cassandra_consistency}: unknown level "
                                   f"(use one of {', '.join(sorted(_consistency_levels()))})")
    for flag in ("credentials_file", "ssl_ca", "ssl_cert", "ssl_key"):
        path = getattr(o, f"cassandra_{flag}")
        if path and not os.path.isfile(path):
            raise CassandraSourceError(f"--cassandra_{flag} {path}: no such file")
    if options.view_as(StandardOptions).runner in (None, "DirectRunner"):
        workers = options.view_as(DirectOptions).direct_num_workers
    else:
        workers = (options.view_as(WorkerOptions).max_num_workers
                   or options.view_as(WorkerOptions).num_workers)
    return CassandraConfig(
        hosts=hosts, port=port, keyspace=keyspace, table=table,
        id_column=o.cassandra_id_column, label_column=o.cassandra_label_column,
        image_column=o.cassandra_image_column, split_column=o.cassandra_split_column or None,
        consistency=o.cassandra_consistency.upper(), local_dc=o.cassandra_local_dc or None,
        protocol_version=o.cassandra_protocol_version or None,
        credentials_file=o.cassandra_credentials_file, ssl_ca=o.cassandra_ssl_ca,
        ssl_cert=o.cassandra_ssl_cert, ssl_key=o.cassandra_ssl_key, splits=o.cassandra_splits,
        workers=max(1, workers or 1), page_size=o.cassandra_page_size, retries=o.cassandra_retries)


# ---------------------------------------------------------------- connecting

def _consistency_levels() -> dict[str, int]:
    from cassandra import ConsistencyLevel

    return dict(ConsistencyLevel.name_to_value)


def read_credentials(config: CassandraConfig) -> tuple[str, str] | None:
    """username/password from --cassandra_credentials_file (lines `username=...`, `password=...`)
    or from the environment; never from a flag value (flags end up in logs and `ps`)."""
    if config.credentials_file:
        values = {}
        with open(config.credentials_file) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and not key.startswith("#"):
                    values[key.strip().lower()] = value.strip()
        if not values.get("username") or "password" not in values:
            raise CassandraSourceError(f"--cassandra_credentials_file {config.credentials_file}: "
                                       "needs lines username=... and password=...")
        return values["username"], values["password"]
    user, password = (os.environ.get(name) for name in CREDENTIALS_ENV)
    return (user, password or "") if user else None


def ssl_context(config: CassandraConfig) -> ssl.SSLContext | None:
    if not (config.ssl_ca or config.ssl_cert):
        return None
    context = ssl.create_default_context(cafile=config.ssl_ca)
    if config.ssl_cert:
        context.load_cert_chain(config.ssl_cert, config.ssl_key)
    return context


def connect(config: CassandraConfig, connect_timeout: float = 10.0):
    """A driver Cluster + Session set up for scanning: token-aware routing, tuple rows,
    quick reconnection (a restarted node is back in seconds, not the default minutes)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import (DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy,
                                    TokenAwarePolicy)
    from cassandra.query import tuple_factory

    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.local_dc)),
        consistency_level=_consistency_levels()[config.consistency],
        request_timeout=config.request_timeout_s, row_factory=tuple_factory)
    credentials = read_credentials(config)
    kwargs = {"protocol_version": config.protocol_version} if config.protocol_version else {}
    cluster = Cluster(
        list(config.hosts), port=config.port, execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=PlainTextAuthProvider(*credentials) if credentials else None,
        ssl_context=ssl_context(config), connect_timeout=connect_timeout,
        control_connection_timeout=connect_timeout,
        reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0), **kwargs)
    try:
        return cluster, cluster.connect()
    except Exception:
        cluster.shutdown()
        raise


@contextlib.contextmanager
def quiet_driver():
    """The driver logs each failed connection with a traceback; the caller reports it in one line."""
    driver = logging.getLogger("cassandra")
    level = driver.level
    driver.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        driver.setLevel(level)


def connection_problem(e: Exception, config: CassandraConfig) -> str:
    """One line saying why connecting failed."""
    from cassandra.cluster import NoHostAvailable

    where = f"{','.join(config.hosts)}:{config.port}"
    if isinstance(e, NoHostAvailable) and e.errors:
        reason = str(next(iter(e.errors.values())))
    else:
        reason = str(e) or type(e).__name__
    reason = " ".join(reason.split())
    if "ProtocolException" in reason or "protocol version" in reason.lower():
        return (f"cannot talk to Cassandra at {where}: protocol version not supported by the "
                f"server (pass --cassandra_protocol_version, e.g. 3 for Cassandra 2.1): {reason[:200]}")
    if "requires authentication" in reason:
        return (f"Cassandra at {where} requires credentials: pass --cassandra_credentials_file or "
                f"set {' / '.join(CREDENTIALS_ENV)}")
    if "Authentication" in reason or "credentials" in reason.lower():
        return f"Cassandra at {where} refused the credentials: {reason[:200]}"
    return f"cannot reach Cassandra at {where}: {reason[:200]}"


def table_metadata(cluster, config: CassandraConfig):
    """The table's driver metadata (portable to 2.1), or a clear error naming what is missing."""
    keyspaces = cluster.metadata.keyspaces
    keyspace = keyspaces.get(config.keyspace) or keyspaces.get(config.keyspace.lower())
    if keyspace is None:
        user = sorted(k for k in keyspaces if not k.startswith("system"))
        raise CassandraSourceError(f"keyspace {config.keyspace!r} does not exist at "
                                   f"{','.join(config.hosts)}:{config.port} (keyspaces: {', '.join(user) or 'none'})")
    table = keyspace.tables.get(config.table) or keyspace.tables.get(config.table.lower())
    if table is None:
        raise CassandraSourceError(f"table {config.keyspace}.{config.table} does not exist "
                                   f"(tables: {', '.join(sorted(keyspace.tables)) or 'none'})")
    for flag, column in config.columns.items():
        if column not in table.columns:
            raise CassandraSourceError(
                f"--cassandra_{flag}_column {column!r}: no such column in {config.keyspace}.{config.table} "
                f"(columns: {', '.join(table.columns)})")
    image_type = table.columns[config.image_column].cql_type
    if image_type not in IMAGE_TYPES:
        raise CassandraSourceError(f"--cassandra_image_column {config.image_column!r} is of type "
                                   f"{image_type}, not blob")
    return table


def check(config: CassandraConfig) -> None:
    """Connect once before any worker starts: unreachable hosts, unknown keyspace / table /
    column, unsupported partitioner each give one clear line."""
    try:
        with quiet_driver():
            cluster, _ = connect(config, connect_timeout=5.0)
    except CassandraSourceError:
        raise
    except Exception as e:
        raise CassandraSourceError(connection_problem(e, config)) from None
    try:
        table_metadata(cluster, config)
        token_bounds(cluster)
    finally:
        cluster.shutdown()


# ---------------------------------------------------------------- the token ring

def token_bounds(cluster) -> tuple[int, int]:
    name = (cluster.metadata.partitioner or "").rsplit(".", 1)[-1]
    if name not in TOKEN_BOUNDS:
        raise CassandraSourceError(f"partitioner {name or 'unknown'} is not supported "
                                   f"(use {' or '.join(TOKEN_BOUNDS)})")
    return TOKEN_BOUNDS[name]


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
    """PBegin -> one row dict per table row (the shape pipeline/sources.py describes):
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
