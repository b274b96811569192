"""Keys AWS S3 keeps as they are but a file system or another store would not (`a//b`, `a/./b`,
a trailing `/`): the listing quarantines each with its reason instead of quietly normalising it
into another name or listing a folder twice.

The store here is moto's S3 mock (infra/local/moto_s3.py): SeaweedFS, our real store, merges
`a//b` into `a/b` and refuses `./` segments (tests/test_object_store.py), so it cannot hold the
keys a bucket on AWS may hold; moto keeps them as AWS does."""
from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from infra.local.s3server import LocalS3
from pipeline.dataset.storage import S3Settings, Storage
from pipeline.sources.listing import ListAllFiles

KEYS = ["src/ok.png", "src/a/fine.png", "src/a//double.png", "src/./dot.png", "src/b/../up.png",
        "src/folder-marker/", "src//top.png"]


@pytest.fixture(scope="module")
def storage():
    with LocalS3(backend="moto") as server:
        client = server.client()
        client.create_bucket(Bucket="odd")
        for key in KEYS:
            client.put_object(Bucket="odd", Key=key, Body=b"x")
        creds = server.credentials
        yield Storage(settings=S3Settings(endpoint_url=server.endpoint_url,
                                          access_key_id=creds["AWS_ACCESS_KEY_ID"],
                                          secret_access_key=creds["AWS_SECRET_ACCESS_KEY"]))


def test_odd_keys_are_quarantined_with_their_reason_and_plain_ones_listed_once(storage):
    with TestPipeline(runner="DirectRunner") as p:
        files, rejected = p | ListAllFiles(storage, "s3://odd/src")
        assert_that(files | "Keys" >> beam.Map(lambda kv: kv[0]),
                    equal_to(["ok.png", "a/fine.png"]), label="Files")
        assert_that(rejected | "Reasons" >> beam.Map(
                        lambda q: (q["id"], q["reason"].split(";")[0])),
                    # src/./ and src// are prefixes at the top: refused whole (their objects unread)
                    equal_to([("a//double.png", "unusable key: holds // (an empty path segment)"),
                              (".", "unusable key: holds a . or .. segment"),
                              ("b/../up.png", "unusable key: holds a . or .. segment"),
                              ("folder-marker/", "unusable key: ends with / (a folder marker, not a file)"),
                              ("", "unusable key: not a plain relative path (empty, absolute, NUL or backslash)")]),
                    label="Rejected")
