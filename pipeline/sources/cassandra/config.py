"""A Cassandra source's configuration: the cassandra:// URL, the --cassandra_* flags, and the
CassandraConfig every worker carries (connection.py connects with it, read.py reads)."""
from __future__ import annotations

import os
from dataclasses import dataclass

SCHEME = "cassandra://"
DEFAULT_PORT = 9042
CREDENTIALS_ENV = ("CASSANDRA_USERNAME", "CASSANDRA_PASSWORD")


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
    # A dataset is a snapshot: a majority of the local data center's replicas answer each read,
    # so a replica that missed writes cannot silently drop rows (LOCAL_ONE is cheaper, weaker).
    consistency: str = "LOCAL_QUORUM"
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


def config_from(o, source_url: str, workers: int) -> CassandraConfig:
    """The source's settings from the job's --cassandra_* flags (`o`: the parsed options) for a
    run on `workers` workers."""
    hosts, port, keyspace, table = parse_source_url(source_url)
    for flag in ("splits", "page_size", "retries"):
        if getattr(o, f"cassandra_{flag}") < (1 if flag == "page_size" else 0):
            raise CassandraSourceError(f"--cassandra_{flag} {getattr(o, f'cassandra_{flag}')}: too small")
    if o.cassandra_consistency.upper() not in consistency_levels():
        raise CassandraSourceError(f"--cassandra_consistency {o.cassandra_consistency}: unknown level "
                                   f"(use one of {', '.join(sorted(consistency_levels()))})")
    for flag in ("credentials_file", "ssl_ca", "ssl_cert", "ssl_key"):
        path = getattr(o, f"cassandra_{flag}")
        if path and not os.path.isfile(path):
            raise CassandraSourceError(f"--cassandra_{flag} {path}: no such file")
    return CassandraConfig(
        hosts=hosts, port=port, keyspace=keyspace, table=table,
        id_column=o.cassandra_id_column, label_column=o.cassandra_label_column,
        image_column=o.cassandra_image_column, split_column=o.cassandra_split_column or None,
        consistency=o.cassandra_consistency.upper(), local_dc=o.cassandra_local_dc or None,
        protocol_version=o.cassandra_protocol_version or None,
        credentials_file=o.cassandra_credentials_file, ssl_ca=o.cassandra_ssl_ca,
        ssl_cert=o.cassandra_ssl_cert, ssl_key=o.cassandra_ssl_key, splits=o.cassandra_splits,
        workers=max(1, workers or 1), page_size=o.cassandra_page_size, retries=o.cassandra_retries)


def consistency_levels() -> dict[str, int]:
    from cassandra import ConsistencyLevel

    return dict(ConsistencyLevel.name_to_value)


def add_flags(parser) -> None:
    """--source cassandra://host1,host2:port/keyspace/table reads one image per row."""
    group = parser.add_argument_group(
        "Cassandra source (--source cassandra://host1,host2:9042/keyspace/table); credentials "
        "come from --cassandra_credentials_file or env CASSANDRA_USERNAME / CASSANDRA_PASSWORD")
    add = group.add_argument
    add("--cassandra_id_column", default="id", help="the row id (any type; str() of it, hex for "
        "blobs, becomes the record id) (default: %(default)s)")
    add("--cassandra_label_column", default="label", help="the class name (default: %(default)s)")
    add("--cassandra_image_column", default="image", help="the encoded image, a blob "
        "(default: %(default)s)")
    add("--cassandra_split_column", default="", help="optional column naming the split "
        "(train/validation/test); empty values fall back to the hash split (default: none)")
    add("--cassandra_consistency", default="LOCAL_QUORUM", help="read consistency level: a "
        "majority of the local data center's replicas answer each page, so the snapshot holds "
        "every acknowledged row; LOCAL_ONE is cheaper and may miss rows a lagging replica lacks "
        "(default: %(default)s)")
    add("--cassandra_local_dc", default="", help="the data center to read from (default: the "
        "first contact point's)")
    add("--cassandra_protocol_version", type=int, default=0, help="CQL native protocol version; "
        "0 lets the driver negotiate (Cassandra 2.1 needs 3) (default: %(default)s)")
    add("--cassandra_credentials_file", help="file with lines username=... and password=... "
        "(else env CASSANDRA_USERNAME / CASSANDRA_PASSWORD; else no authentication)")
    add("--cassandra_ssl_ca", help="CA certificate (PEM) to verify the nodes: turns on TLS")
    add("--cassandra_ssl_cert", help="client certificate (PEM) for mutual TLS")
    add("--cassandra_ssl_key", help="client private key (PEM) for mutual TLS")
    add("--cassandra_splits", type=int, default=0, help="token ranges to read in parallel, at "
        "least; 0: 4 per worker or one per 32 MiB of the table's size estimate, whichever is "
        "more (default: %(default)s)")
    add("--cassandra_page_size", type=int, default=1000, help="rows per page (default: %(default)s)")
    add("--cassandra_retries", type=int, default=8, help="retries per token range on transient "
        "errors, with exponential backoff up to 15 s (default: %(default)s)")
