"""The Cassandra source against a real Cassandra 2.1 over the wire, read by a real Beam
DirectRunner with 2 worker processes: every row exactly once (wrap-around range included), a
server restart in the middle of the read, and the ring arithmetic on its own."""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import random
import threading
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from infra.local import cassandra_load, fashion_mnist
from infra.local.cassandra import PROTOCOL_VERSION
from pipeline.sources.cassandra.ring import TOKEN_BOUNDS, ring_ranges, split_ring
from pipeline.sources.cassandra.config import CassandraConfig, CassandraSourceError, parse_source_url
from pipeline.sources.cassandra.connection import check, connect
from pipeline.sources.cassandra.read import ReadRows
from pipeline.summary import worker_warnings
from tests.conftest import run_cli

KEYSPACE, TABLE = "source_test", "images"
ROWS_PER_SPLIT = 5000            # x 2 splits of Fashion-MNIST = 10,000 rows


# ---------------------------------------------------------------- no server needed

@pytest.mark.parametrize("url, expected", [
    ("cassandra://h1,h2:9142/ks/t", (("h1", "h2"), 9142, "ks", "t")),
    ("cassandra://10.0.0.1/ks/t/", (("10.0.0.1",), 9042, "ks", "t")),
])
def test_parse_source_url(url, expected):
    assert parse_source_url(url) == expected


@pytest.mark.parametrize("url, words", [
    ("cassandra://h1/ks", "keyspace/table"), ("cassandra://h1:port/ks/t", "bad port"),
    ("cassandra:///ks/t", "keyspace/table"), ("s3://b/k", "not a cassandra:// URL")])
def test_parse_source_url_rejects(url, words):
    with pytest.raises(CassandraSourceError, match=words):
        parse_source_url(url)


@pytest.mark.parametrize("tokens, splits", [([0], 1), ([0], 5), ([-7, 3], 3), ([-9, -2, 4, 9], 16),
                                            ([9], 4), ([-9], 7)])
def test_split_ring_covers_every_token_once(tokens, splits):
    """A small token space, checked token by token: each token in exactly one segment, each
    segment inside one ring range (so one replica set owns it), at least `splits` segments."""
    bounds = (-10, 10)
    segments = split_ring(tokens, splits, bounds)
    assert len(segments) >= splits
    ranges = ring_ranges(sorted(tokens))
    for token in range(bounds[0] + 1, bounds[1] + 1):
        owners = [s for s in segments if s[0] < token <= s[1]]
        assert len(owners) == 1, (token, segments)
    for lo, hi in segments:
        assert any(_in_range(lo + 1, r, bounds) and _in_range(hi, r, bounds) for r in ranges)


def test_split_ring_on_a_real_sized_ring():
    rng = random.Random(7)
    bounds = TOKEN_BOUNDS["Murmur3Partitioner"]
    tokens = sorted(rng.randint(*bounds) for _ in range(256))
    segments = sorted(split_ring(tokens, 1000, bounds))
    assert len(segments) >= 1000
    assert segments[0][0] == bounds[0] and segments[-1][1] == bounds[1]
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))    # no gap, no overlap


def _in_range(token, ring_range, bounds):
    start, end = ring_range
    if start < end:
        return start < token <= end
    return token > start or token <= end          # the wrap-around range (or the whole ring)


# ---------------------------------------------------------------- against the real server

@pytest.fixture(scope="module")
def table(cassandra) -> CassandraConfig:
    """10,000 Fashion-MNIST PNG rows in a table; the config that reads it."""
    config = CassandraConfig(hosts=(cassandra.host,), port=cassandra.port, keyspace=KEYSPACE,
                             table=TABLE, split_column="split", protocol_version=PROTOCOL_VERSION,
                             splits=32, page_size=500, backoff_s=0.5)
    cluster, session = connect(config)
    try:
        cassandra_load.create_table(session, KEYSPACE, TABLE)
        cassandra_load.insert_rows(session, KEYSPACE, TABLE,
                                   cassandra_load.fashion_mnist_rows(ROWS_PER_SPLIT), log=lambda *_: None)
    finally:
        cluster.shutdown()
    return config


def table_rows(config: CassandraConfig) -> tuple[list[str], list[int], list[int]]:
    """What a plain driver scan sees: row descriptions, each row's token, the ring's tokens."""
    cluster, session = connect(config)
    try:
        rows = list(session.execute(f"SELECT token(id), id, label, split, image FROM {KEYSPACE}.{TABLE}"))
        ring = [t.value for t in cluster.metadata.token_map.ring]
    finally:
        cluster.shutdown()
    described = [describe({"id": str(r[1]), "label": r[2], "split": r[3] or "", "image": r[4]}) for r in rows]
    return sorted(described), [r[0] for r in rows], ring


def describe(row: dict) -> str:
    image = hashlib.sha1(row["image"]).hexdigest() if row["image"] is not None else "-"
    return f"{row['id']}\t{row['label']}\t{row['split']}\t{image}"


def beam_options() -> PipelineOptions:
    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                            "--direct_num_workers=2"])


def read_with_beam(config: CassandraConfig, out_dir: str, slow: "SlowRows | None" = None,
                   warnings: dict | None = None) -> list[str]:
    """The rows read, described; `warnings` gets what the job's summary would count."""
    with beam.Pipeline(options=beam_options()) as p:
        rows = p | ReadRows(config)
        if slow:
            rows = rows | "Slow" >> beam.ParDo(slow)
        _ = rows | beam.Map(describe) | beam.io.WriteToText(os.path.join(out_dir, "rows"))
    if warnings is not None:
        warnings.update(worker_warnings(p.result))
    lines = []
    for path in glob.glob(os.path.join(out_dir, "rows*")):
        with open(path) as f:
            lines += f.read().splitlines()
    return sorted(lines)


def test_reads_every_row_exactly_once(table, tmp_path):
    expected, tokens, ring = table_rows(table)
    assert len(expected) == 2 * ROWS_PER_SPLIT and len(ring) >= 16
    wrapped = [t for t in tokens if t > max(ring) or t <= min(ring)]
    assert wrapped, "no row in the wrap-around range: the test would not cover it"
    got = read_with_beam(table, str(tmp_path))
    assert len(got) == len(set(got)), "duplicates"
    assert got == expected


class SlowRows(beam.DoFn):
    """Slows the read down (2 ms a row) and touches `marker` once this worker has passed
    `after` rows, so the test can restart the server while ranges are being read."""

    def __init__(self, marker: str, after: int):
        self.marker, self.after = marker, after

    def setup(self):
        self.seen = 0

    def process(self, row):
        self.seen += 1
        if self.seen == self.after:
            open(self.marker, "w").close()
        time.sleep(0.002)
        yield row


def test_server_restart_while_reading(cassandra, table, tmp_path):
    expected, _, _ = table_rows(table)
    config = dataclasses.replace(table, page_size=100)
    marker, outcome, warnings = str(tmp_path / "started"), {}, {}

    def job():
        try:
            outcome["rows"] = read_with_beam(config, str(tmp_path / "out"), SlowRows(marker, 500), warnings)
        except Exception as e:  # reported by the assertions below
            outcome["error"] = e

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 120
    while not os.path.exists(marker) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(marker), outcome.get("error", "the job never got going")
    cassandra.stop()
    time.sleep(1.0)
    assert thread.is_alive(), "the job finished before the server went down; nothing was tested"
    cassandra.start()
    thread.join(240)
    assert not thread.is_alive(), "the job hangs after the restart"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["rows"] == expected
    # The workers' retries (logged as warnings, in the log file only) are counted for the
    # ingestion's summary line through the runner's metrics (pipeline/summary.py).
    assert set(warnings) <= {"Cassandra retry", "Cassandra retries"} and sum(warnings.values()) >= 1, warnings


def test_check_names_what_is_wrong(cassandra, table):
    check(table)
    for change, words in [({"keyspace": "nokeyspace"}, "keyspace 'nokeyspace' does not exist"),
                          ({"table": "notable"}, f"table {KEYSPACE}.notable does not exist"),
                          ({"image_column": "picture"}, "--cassandra_image_column 'picture': no such column"),
                          ({"image_column": "label"}, "is of type text, not blob"),
                          ({"port": 9}, "cannot reach Cassandra at 127.0.0.1:9")]:
        with pytest.raises(CassandraSourceError, match=words):
            check(dataclasses.replace(table, **change))


def test_range_that_keeps_failing_fails_the_job_naming_it(cassandra, table, tmp_path):
    """A server that is gone for good: the job fails after its retries with the range and the
    error in the message, instead of hanging. (Retries shortened so the test is quick.)"""
    from pipeline.sources.cassandra.read import ReadRange

    config = dataclasses.replace(table, retries=2, backoff_s=0.1)
    reader = ReadRange(config)
    reader.setup()
    cassandra.stop()
    try:
        with pytest.raises(CassandraSourceError, match=r"token range \(-?\d+, -?\d+\] of "
                           rf"{KEYSPACE}.{TABLE} failed 3 times; last error: NoHostAvailable"):
            list(reader.process((-100, 100)))
    finally:
        reader.teardown()
        cassandra.start()


# ---------------------------------------------------------------- the whole job from the CLI

@pytest.fixture(scope="module")
def small_table(cassandra) -> str:
    """300 good Fashion-MNIST rows plus one row of each kind of bad input; its source URL."""
    config = CassandraConfig(hosts=(cassandra.host,), port=cassandra.port, keyspace=KEYSPACE,
                             table="with_bad_rows", protocol_version=PROTOCOL_VERSION)
    good = list(cassandra_load.fashion_mnist_rows(150))
    png = good[0][2]
    bad = [(uuid.uuid4(), "Bag", None, ""), (uuid.uuid4(), "Bag", b"", ""),
           (uuid.uuid4(), "Bag", b"not a png at all", ""), (uuid.uuid4(), "Bag", png[:len(png) // 2], ""),
           (uuid.uuid4(), "Spaceship", png, ""), (uuid.uuid4(), None, png, "")]
    cluster, session = connect(config)
    try:
        cassandra_load.create_table(session, KEYSPACE, config.table)
        cassandra_load.insert_rows(session, KEYSPACE, config.table, good + bad, log=lambda *_: None)
    finally:
        cluster.shutdown()
    return config.url


def test_cli_ingests_a_table_and_quarantines_bad_rows(small_table, tmp_path):
    from pipeline.dataset.manifest import read_manifest
    from pipeline.dataset.storage import Storage
    from pipeline.dataset.quarantine import read_entries

    output = str(tmp_path / "dataset")
    result = run_cli(["pipeline", "--source", small_table, "--output", output,
                      "--cassandra_protocol_version", "3", "--cassandra_split_column", "split",
                      "--classes", ",".join(fashion_mnist.CLASSES), "--num_readers", "2",
                      "--splits", "train:0.8,validation:0.2"])
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(Storage(), output)
    counts = {name: split.num_records for name, split in manifest.splits.items()}
    assert sum(counts.values()) + manifest.duplicates == 300, counts
    assert manifest.quarantine["count"] == 6, manifest.quarantine
    entries = list(read_entries(Storage(), output, manifest.quarantine))
    reasons = [entry["reason"].split(":")[0] for entry in entries]
    assert sorted(reasons) == sorted(["empty image", "empty image", "not an image (unrecognised bytes)", "corrupt image",
                                      "unknown label", "missing label"]), reasons
    assert all(entry["source"].startswith(small_table + "/") for entry in entries)


@pytest.mark.parametrize("change, words", [
    (lambda url: url.replace(f"/{KEYSPACE}/", "/nokeyspace/"), ["keyspace 'nokeyspace' does not exist"]),
    (lambda url: url.replace("/with_bad_rows", "/notable"), [f"table {KEYSPACE}.notable does not exist"]),
    (lambda url: url, ["--cassandra_label_column 'klass': no such column"]),
    (lambda url: "cassandra://127.0.0.1:9/ks/t", ["cannot reach Cassandra at 127.0.0.1:9"]),
    (lambda url: url, ["--cassandra_consistency SOMETIMES: unknown level"]),
])
def test_cli_errors_name_the_problem(small_table, tmp_path, change, words):
    extra = {"klass": ["--cassandra_label_column", "klass"],
             "SOMETIMES": ["--cassandra_consistency", "SOMETIMES"]}
    extra = next((flags for word, flags in extra.items() if word in words[0]), [])
    result = run_cli(["pipeline", "--source", change(small_table), "--output", str(tmp_path / "d"),
                      "--cassandra_protocol_version", "3", *extra])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]    # (Beam's import may log a warning first)
    assert last.startswith("pipeline: error: ") and all(w in last for w in words), result.stderr[-2000:]


# ---------------------------------------------------------------- credentials

@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A second real server that demands a password (superuser cassandra/cassandra)."""
    from infra.local.cassandra import LocalCassandra

    server = LocalCassandra(run_dir=str(tmp_path_factory.mktemp("cassandra-auth")), password_auth=True).start()
    yield server
    server.stop()


def check_error(config: CassandraConfig) -> str:
    try:
        check(config)
    except CassandraSourceError as e:
        return str(e)
    return ""


def let_in(error: str) -> bool:
    """Past the login: the checks went on to the table (system.local's host_id is a uuid, not a
    blob; or, while the server is still starting up, its schema shows fewer columns or none: CI
    saw system's table metadata stay empty for over a minute; that error too needs a session)."""
    return ("is of type uuid, not blob" in error or "no such column in system.local" in error
            or "table system.local does not exist" in error)


def test_credentials_come_from_a_file_or_the_environment(secured, tmp_path, monkeypatch):
    config = CassandraConfig(hosts=(secured.host,), port=secured.port, keyspace="system",
                             table="local", id_column="key", label_column="cluster_name",
                             image_column="host_id", protocol_version=PROTOCOL_VERSION)
    monkeypatch.delenv("CASSANDRA_USERNAME", raising=False)
    assert "requires credentials" in check_error(config)
    wrong, right = tmp_path / "wrong", tmp_path / "right"
    wrong.write_text("username=cassandra\npassword=nope\n")
    right.write_text("# the default superuser\nusername = cassandra\npassword = cassandra\n")
    deadline = time.monotonic() + 60          # the superuser appears ~10 s after start-up
    while not let_in(check_error(dataclasses.replace(config, credentials_file=str(right)))):
        assert time.monotonic() < deadline, check_error(dataclasses.replace(config, credentials_file=str(right)))
        time.sleep(1)
    assert "refused the credentials" in check_error(dataclasses.replace(config, credentials_file=str(wrong)))
    monkeypatch.setenv("CASSANDRA_USERNAME", "cassandra")
    monkeypatch.setenv("CASSANDRA_PASSWORD", "cassandra")
    assert let_in(check_error(config))


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A third real server that speaks only TLS to clients, with a self-signed certificate for
    127.0.0.1 (made by the JDK's keytool); yields (server, the certificate as PEM)."""
    import subprocess

    from infra.local.cassandra import LocalCassandra

    where = tmp_path_factory.mktemp("cassandra-tls")
    keystore, pem = str(where / "node.jks"), str(where / "node.pem")
    subprocess.run(["keytool", "-genkeypair", "-keystore", keystore, "-storetype", "JKS", "-alias", "node",
                    "-dname", "CN=127.0.0.1", "-ext", "SAN=ip:127.0.0.1", "-keyalg", "RSA",
                    "-keysize", "2048", "-validity", "2", "-storepass", "secret1", "-keypass", "secret1"],
                   check=True, capture_output=True)
    with open(pem, "w") as f:
        subprocess.run(["keytool", "-exportcert", "-rfc", "-alias", "node", "-keystore", keystore,
                        "-storepass", "secret1"], check=True, stdout=f, stderr=subprocess.DEVNULL)
    server = LocalCassandra(run_dir=str(where / "run"), keystore=(keystore, "secret1")).start()
    yield server, pem
    server.stop()


def test_tls_with_a_ca_file(tls_server):
    server, pem = tls_server
    config = CassandraConfig(hosts=(server.host,), port=server.port, keyspace="system",
                             table="local", id_column="key", label_column="cluster_name",
                             image_column="host_id", protocol_version=PROTOCOL_VERSION)
    assert "cannot reach Cassandra" in check_error(config)                  # plain text: refused
    # Past the TLS handshake the check reads the keyspace's schema and names what is wrong with
    # the table: proof that the connection was made. (Right after start-up the 2.1 server's
    # metadata of the system keyspace may list only the key column of system.local, or no table
    # yet, so any of the three schema errors may come; each needs a session.)
    trusted = check_error(dataclasses.replace(config, ssl_ca=pem))
    assert ("is of type uuid, not blob" in trusted or "no such column in system.local" in trusted
            or "table system.local does not exist" in trusted), trusted
    untrusted = dataclasses.replace(config, ssl_ca="/etc/ssl/certs/ca-certificates.crt")
    assert "certificate verify failed" in check_error(untrusted)            # self-signed: not theirs
