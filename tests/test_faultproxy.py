"""The fault-injecting proxy (infra/local/faultproxy.py, a test utility) in front of the real S3
server: with no faults every request boto3 makes passes through unchanged; with each kind of
fault at 100 % the client sees that fault, as it would from a real store."""
from __future__ import annotations

import http.client
import os
import time
import urllib.parse

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ResponseStreamingError

from infra.local.faultproxy import FaultProxy

MiB = 2**20


def client_of(s3, url: str, attempts: int = 1):
    """A client of the server at `url` signed with the session server's identity; `attempts`
    tries per request (1: what each single answer was)."""
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=s3.credentials["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=s3.credentials["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}))


@pytest.fixture
def proxy(s3):
    with FaultProxy(s3.endpoint_url, seed=1) as p:
        yield p


@pytest.fixture(scope="module")
def direct(s3):
    c = client_of(s3, s3.endpoint_url)
    c.create_bucket(Bucket="proxied")
    return c


def test_every_request_boto3_makes_passes_through_without_faults(s3, proxy, direct):
    c = client_of(s3, proxy.endpoint_url)
    big = os.urandom(9 * MiB)
    c.put_object(Bucket="proxied", Key="small", Body=b"s" * 3000)      # Expect: 100-continue
    c.put_object(Bucket="proxied", Key="big", Body=big)
    c.upload_fileobj(_Unseekable(big), "proxied", "multipart",         # 5 MiB parts, unseekable
                     Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    put_chunked(c, "chunked", [b"c" * 2000, b"c" * 3000])              # Transfer-Encoding: chunked
    c.copy_object(Bucket="proxied", Key="copy", CopySource={"Bucket": "proxied", "Key": "small"})
    for key, body in (("small", b"s" * 3000), ("big", big), ("multipart", big),
                      ("chunked", b"c" * 5000), ("copy", b"s" * 3000)):
        assert c.get_object(Bucket="proxied", Key=key)["Body"].read() == body, key
        assert direct.get_object(Bucket="proxied", Key=key)["Body"].read() == body, key
    assert c.get_object(Bucket="proxied", Key="big", Range="bytes=1000-1999")["Body"].read() == big[1000:2000]
    assert c.head_object(Bucket="proxied", Key="big")["ContentLength"] == len(big)
    pages = c.get_paginator("list_objects_v2").paginate(Bucket="proxied", PaginationConfig={"PageSize": 2})
    assert sorted(o["Key"] for page in pages for o in page["Contents"]) == \
        ["big", "chunked", "copy", "multipart", "small"]
    with pytest.raises(ClientError, match="NoSuchKey"):                # errors pass through too
        c.get_object(Bucket="proxied", Key="missing")
    with pytest.raises(ClientError, match="PreconditionFailed"):
        c.put_object(Bucket="proxied", Key="small", Body=b"x", IfNoneMatch="*")
    c.delete_objects(Bucket="proxied", Delete={"Objects": [{"Key": "copy"}, {"Key": "chunked"}]})
    assert proxy.requests >= 20 and not any(proxy.injected.values())


@pytest.mark.parametrize("kind, status, code", [("slowdown", 503, "SlowDown"),
                                                ("internal", 500, "InternalError")])
def test_error_answers_are_s3_errors_that_botocore_retries(s3, proxy, direct, kind, status, code):
    proxy.set_rates(**{kind: 1.0})
    with pytest.raises(ClientError) as once:
        client_of(s3, proxy.endpoint_url).put_object(Bucket="proxied", Key=f"never-{kind}", Body=b"x")
    assert once.value.response["Error"]["Code"] == code
    assert once.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    before = proxy.requests
    with pytest.raises(ClientError):
        client_of(s3, proxy.endpoint_url, attempts=3).head_object(Bucket="proxied", Key="small")
    assert proxy.requests - before == 3                  # botocore took it for a transient fault
    with pytest.raises(ClientError, match="Not Found|404"):
        direct.head_object(Bucket="proxied", Key=f"never-{kind}")     # the server never saw it
    assert proxy.injected[kind] == 4


def test_a_cut_body_reaches_the_reader_after_full_headers(s3, proxy, direct):
    body = os.urandom(100_000)
    direct.put_object(Bucket="proxied", Key="to-cut", Body=body)
    proxy.set_rates(cut=1.0)
    response = client_of(s3, proxy.endpoint_url, attempts=3).get_object(Bucket="proxied", Key="to-cut")
    assert response["ContentLength"] == len(body)       # the headers promised it all...
    with pytest.raises(ResponseStreamingError, match="IncompleteRead"):
        response["Body"].read()                          # ...and half came: no retry can help here
    assert proxy.injected["cut"] == 1


def test_a_lost_reply_to_a_write_leaves_the_write_applied(s3, proxy, direct):
    proxy.set_rates(lost=1.0)
    once = client_of(s3, proxy.endpoint_url)
    with pytest.raises(ConnectionClosedError):
        once.put_object(Bucket="proxied", Key="applied", Body=b"it is there", IfNoneMatch="*")
    assert direct.get_object(Bucket="proxied", Key="applied")["Body"].read() == b"it is there"
    assert once.get_object(Bucket="proxied", Key="applied")["Body"].read() == b"it is there"  # a read
    proxy.set_rates()
    # The retry of a create-only write meets its own object: the ambiguity a commit must resolve.
    with pytest.raises(ClientError, match="PreconditionFailed"):
        once.put_object(Bucket="proxied", Key="applied", Body=b"it is there", IfNoneMatch="*")
    assert proxy.injected["lost"] == 1


def test_a_delay_holds_the_request_back(s3, proxy):
    proxy.delay_seconds = 0.5
    proxy.set_rates(delay=1.0)
    started = time.monotonic()
    client_of(s3, proxy.endpoint_url).head_object(Bucket="proxied", Key="small")
    assert time.monotonic() - started >= 0.5 and proxy.injected["delay"] == 1


def test_faults_are_drawn_from_the_seed(s3):
    def faults(seed):
        with FaultProxy(s3.endpoint_url, seed=seed, slowdown=0.3) as p:
            c = client_of(s3, p.endpoint_url)
            return [_fails(lambda: c.head_object(Bucket="proxied", Key="small")) for _ in range(40)]

    first = faults(7)
    assert first == faults(7) and first != faults(8)
    assert 4 <= sum(first) <= 20                         # about 30 % of 40


def _fails(call) -> bool:
    try:
        call()
        return False
    except ClientError:
        return True


def put_chunked(c, key: str, parts: list[bytes]) -> None:
    """A PUT with Transfer-Encoding: chunked (boto3 over plain HTTP never sends one itself)."""
    url = urllib.parse.urlsplit(c.generate_presigned_url("put_object", Params={"Bucket": "proxied", "Key": key}))
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("PUT", f"{url.path}?{url.query}", body=iter(parts), encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 200, response.read()
    connection.close()


class _Unseekable:
    """A stream boto3 cannot seek or measure (a pipe, a socket)."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def read(self, size: int = -1) -> bytes:
        size = len(self.data) - self.at if size < 0 else size
        block, self.at = self.data[self.at:self.at + size], self.at + size
        return block
