"""Connecting to a Cassandra source: its configuration (the cassandra:// URL and the
--cassandra_* flags), credentials from the environment or a file, TLS, the connection, the
one-line errors that name what is wrong, and the check of keyspace, table and columns before
a job starts. The reading itself is in cassandra_source.py."""
from __future__ import annotations

import contextlib
import logging
import os
import ssl
from dataclasses import dataclass

from pipeline.cassandra_ring import TOKEN_BOUNDS

SCHEME = "cassandra://"
DEFAULT_PORT = 9042
CREDENTIALS_ENV = ("CASSANDRA_USERNAME", "CASSANDRA_PASSWORD")
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


def token_bounds(cluster) -> tuple[int, int]:
    name = (cluster.metadata.partitioner or "").rsplit(".", 1)[-1]
    if name not in TOKEN_BOUNDS:
        raise CassandraSourceError(f"partitioner {name or 'unknown'} is not supported "
                                   f"(use {' or '.join(TOKEN_BOUNDS)})")
    return TOKEN_BOUNDS[name]


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
