"""kill -9 of the ingestion job at each phase of publishing a new version with --overwrite over a
published dataset (the real job, the real S3 server; the job's test hook PIPELINE_TEST_PAUSE_AT
holds it at the phase): the previous version always reads completely, sha256 by sha256, and a
re-run publishes the new one. Publishing the same staged request twice gives the same manifest."""
import hashlib
import json
import time

import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.naming import DEDUPED, MANIFEST_NAME
from pipeline import staging
from pipeline.dataset.storage import join
from pipeline.publish import publish, read_request, version_manifest
from tests.test_publish_versions import (IMAGES, copy_images, ingest, ingest_command, kill,
                                         paused_job, reads_completely)

OUTPUT = "s3://crash/datasets/fm"
NEW = ("--overwrite", "--num_shards", "3")        # another version of the same images
LEASE = ("--staging_lease_seconds", "3")         # a killed run's leftovers are removable 3 s later


@pytest.fixture(scope="module")
def first(storage, fmnist) -> dict:
    source = copy_images(storage, fmnist, "s3://crash/raw", duplicate=True)
    ingest(source, OUTPUT)
    return {"source": source, "text": storage.read_text(join(OUTPUT, MANIFEST_NAME)),
            "manifest": read_manifest(storage, OUTPUT)}


@pytest.mark.parametrize("phase", ["placing", "committing", "retiring"])
def test_kill_during_publish_leaves_the_previous_version_whole(storage, first, phase, tmp_path):
    job = paused_job(ingest_command(first["source"], OUTPUT, *NEW, *LEASE), phase)
    try:
        staging = job.staging
        request = read_request(storage, staging)
    finally:
        kill(job)

    old = first["manifest"]
    assert reads_completely(storage, OUTPUT, old, tmp_path) == IMAGES      # every sha256 matches
    current = storage.read_text(join(OUTPUT, MANIFEST_NAME))
    if phase == "retiring":                   # committed just before the kill: the new one is live
        assert read_manifest(storage, OUTPUT).version == version_manifest(request).version
    else:
        assert current == first["text"]
    if phase == "placing":
        # Dedupe wrote a new file; the shard writer's own file (pre-dedupe bytes) is untouched.
        info, = [s for s in request.shards if (s.staged or "").startswith(DEDUPED + "/")]
        assert sha256(storage.read_bytes(join(staging, info.file))) != info.sha256
        copy = join(staging, info.staged)
        placed = join(OUTPUT, version_manifest(request).version, info.file)
        assert sha256(storage.read_bytes(copy if storage.exists(copy) else placed)) == info.sha256


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_rerun_after_the_crashes_publishes_the_new_version(storage, first, tmp_path):
    left = staging.find(storage, OUTPUT, now=float("inf"))     # every lease taken as expired
    assert left.dead and not left.unknown
    time.sleep(3)                                             # the killed runs' leases expire
    result = ingest(first["source"], OUTPUT, *NEW)
    assert all(f"removed {url}, left by a run that stopped" in result.stderr for url in left.dead), (
        left.dead, result.stderr, result.stdout)
    # The dead runs' folders hold nothing (SeaweedFS lists an emptied folder for up to ~30 s more).
    assert all(staging.is_empty(storage, url) for url in staging.staging_folders(storage, OUTPUT))
    new = read_manifest(storage, OUTPUT)
    assert new.version != first["manifest"].version
    assert reads_completely(storage, OUTPUT, new, tmp_path / "new") == IMAGES
    assert reads_completely(storage, OUTPUT, first["manifest"], tmp_path / "old") == IMAGES


def test_publishing_one_staged_request_twice_gives_the_same_manifest(storage, first, tmp_path):
    previous = read_manifest(storage, OUTPUT)
    job = paused_job(ingest_command(first["source"], OUTPUT, "--overwrite", "--num_shards", "4"),
                     "placing")
    kill(job)                                  # one shard already moved into the version folder
    staging = job.staging
    request = read_request(storage, staging)
    once = publish(storage, staging, OUTPUT, request, overwrite=True)
    twice = publish(storage, staging, OUTPUT, request, overwrite=True)     # a retry: no error
    assert once.to_json() == twice.to_json() == storage.read_text(join(OUTPUT, MANIFEST_NAME))
    assert once.version not in (previous.version, first["manifest"].version)
    assert reads_completely(storage, OUTPUT, once, tmp_path / "once") == IMAGES
    assert reads_completely(storage, OUTPUT, previous, tmp_path / "previous") == IMAGES   # kept
    assert not list(storage.list(join(OUTPUT, first["manifest"].version)))             # retired
    assert not list(storage.list(staging))
    assert json.loads(storage.read_text(join(OUTPUT, once.version, "PUBLISHED.json")))["version"] == once.version
