"""The embedded object store (SeaweedFS) does what the project relies on: a conditional write has
exactly one winner among racing writers (the publish commit, the nightly's pointer and lock),
every request is signature-checked, two servers run side by side, and every acknowledged write
survives a kill -9. Real servers over HTTP on loopback; botocore's retries are off so that each
writer sees the server's own answer."""
from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.local.s3server import LocalS3

WRITERS, ROUNDS = 8, 25
LOSING_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}     # 412, 409 (AWS: both)


def raw_client(server: LocalS3, **overrides):
    """A client that tries each request once, with enough connections for every writer."""
    keys = {"aws_access_key_id": server.credentials["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": server.credentials["AWS_SECRET_ACCESS_KEY"], **overrides}
    return boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}, max_pool_connections=2 * WRITERS),
                        **keys)


def race(write) -> tuple[list[int], list[str]]:
    """Run write(writer) in WRITERS threads released at once; the winners and the losers' codes."""
    start = threading.Barrier(WRITERS)

    def attempt(writer):
        start.wait()
        try:
            write(writer)
            return writer, None
        except ClientError as e:
            return None, e.response["Error"]["Code"]

    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(attempt, range(WRITERS)))
    return [w for w, _ in results if w is not None], [c for _, c in results if c is not None]


@pytest.fixture(scope="module")
def client(s3):
    c = raw_client(s3)
    c.create_bucket(Bucket="races")
    return c


def test_create_only_put_has_exactly_one_winner_per_round(client):
    for round_ in range(ROUNDS):
        key = f"create-only/{round_}"
        winners, codes = race(lambda w: client.put_object(Bucket="races", Key=key, Body=b"writer %d" % w,
                                                           IfNoneMatch="*"))
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert set(codes) <= LOSING_CODES, codes
        body = client.get_object(Bucket="races", Key=key)["Body"].read()
        assert body == b"writer %d" % winners[0]


def test_replace_put_if_match_has_exactly_one_winner_per_round(client):
    client.put_object(Bucket="races", Key="pointer", Body=b"start")
    for round_ in range(ROUNDS):
        etag = client.head_object(Bucket="races", Key="pointer")["ETag"]
        winners, codes = race(lambda w: client.put_object(Bucket="races", Key="pointer",
                                                           Body=b"round %d writer %d" % (round_, w),
                                                           IfMatch=etag))
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert set(codes) <= LOSING_CODES, codes
        body = client.get_object(Bucket="races", Key="pointer")["Body"].read()
        assert body == b"round %d writer %d" % (round_, winners[0])


def test_requests_not_signed_with_the_identity_are_refused(s3, client):
    client.put_object(Bucket="races", Key="secret.txt", Body=b"not for you")
    for overrides, code in (({"aws_secret_access_key": "wrong-secret"}, "SignatureDoesNotMatch"),
                            ({"aws_access_key_id": "AKIAUNKNOWN000000000"}, "InvalidAccessKeyId")):
        with pytest.raises(ClientError) as refused:
            raw_client(s3, **overrides).get_object(Bucket="races", Key="secret.txt")
        assert refused.value.response["Error"]["Code"] == code
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{s3.endpoint_url}/races/secret.txt", timeout=10)
    assert anonymous.value.code == 403


def test_two_servers_run_side_by_side_and_share_nothing():
    with LocalS3() as one, LocalS3() as two:
        assert not set(one.server.ports.values()) & set(two.server.ports.values())
        assert one.credentials != two.credentials
        one.client().create_bucket(Bucket="only-in-one")
        two.client().create_bucket(Bucket="only-in-two")
        assert [b["Name"] for b in one.client().list_buckets()["Buckets"]] == ["only-in-one"]
        assert [b["Name"] for b in two.client().list_buckets()["Buckets"]] == ["only-in-two"]


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:                # closed meanwhile (a connection, not a listener)
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:            # 0A: LISTEN
                address, port = fields[1].split(":")
                found.add((socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8
                           else address, int(port, 16)))
    return found


@pytest.mark.parametrize("bind", [None, "127.0.0.2"])
def test_every_service_listens_only_on_the_address_given_and_loopback(bind):
    with LocalS3(bind=bind) as server:
        expected_ports = set(server.server.ports.values())
        deadline = time.monotonic() + 30
        while True:             # S3 answers before every other service listens (seen: admin's port)
            addresses = listening_addresses(server.process.pid)
            # weed adds a 127.0.0.1 listener to some services bound elsewhere; never another address.
            assert {address for address, _ in addresses} <= {bind or "127.0.0.1", "127.0.0.1"}
            if {port for _, port in addresses} >= expected_ports or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {address for address, _ in addresses} == {bind or "127.0.0.1", "127.0.0.1"}
        assert {port for _, port in addresses} == expected_ports
        assert server.client().list_buckets()["Buckets"] == []        # answers there
    with pytest.raises(ValueError, match="not all of them"):
        LocalS3(bind="0.0.0.0")


def test_every_acknowledged_write_survives_a_kill_9(tmp_path):
    data = str(tmp_path / "s3-data")
    written = {f"objects/{i:04d}.bin": os.urandom(200 + i * 37 % 5000) for i in range(300)}
    with LocalS3(data_dir=data) as server:
        c = raw_client(server)
        c.create_bucket(Bucket="kept")
        with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
            list(pool.map(lambda item: c.put_object(Bucket="kept", Key=item[0], Body=item[1]),
                          written.items()))
        os.kill(server.process.pid, signal.SIGKILL)          # at once: no pause after the writes
        server.process.wait()
    with LocalS3(data_dir=data) as server:                   # other ports, the same identity
        c = raw_client(server)
        listed = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket="kept")
                  for o in page.get("Contents", [])]
        assert listed == sorted(written)
        for key, body in written.items():
            assert c.get_object(Bucket="kept", Key=key)["Body"].read() == body, key
        c.put_object(Bucket="kept", Key="after/restart.bin", Body=b"new")     # still writable
        assert c.get_object(Bucket="kept", Key="after/restart.bin")["Body"].read() == b"new"
