"""Connecting to a Cassandra source: credentials from the environment or a file, TLS, the
driver session, the one-line errors that name what is wrong, and the check of keyspace, table
and columns before a job starts."""
from __future__ import annotations

import contextlib
import logging
import os
import ssl

from pipeline.sources.cassandra.config import (CREDENTIALS_ENV, CassandraConfig, CassandraSourceError,
                                               consistency_levels)
from pipeline.sources.cassandra.ring import TOKEN_BOUNDS

IMAGE_TYPES = ("blob",)


# ---------------------------------------------------------------- connecting

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
        consistency_level=consistency_levels()[config.consistency],
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
