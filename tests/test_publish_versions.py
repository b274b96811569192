"""Versioned publishing with the real Beam job against the real S3 server: every run's files in a
version folder named by its content, one manifest naming them as the commit, --overwrite that
keeps the previous version (--keep_versions) and retires older ones, and flat datasets from
before versions still read and retired in turn."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from pipeline.dataset import reader
from pipeline.dataset.manifest import Manifest, read_manifest
from pipeline.dataset.naming import FLAT_MANIFEST, MANIFEST_NAME, PUBLISHED_NAME
from pipeline.dataset.shard_cache import ShardCache
from pipeline.dataset.storage import WriteConflict, join
from tests.conftest import ROOT, run_cli
from tests.helpers import png
from tests.test_ingest import read_shards

IMAGES = 40


def copy_images(storage, fmnist, root: str, count: int = IMAGES, duplicate: bool = False) -> str:
    """`count` real Fashion-MNIST train images as <root>/<class>/<n>.png (plus one image copied
    under a second name when `duplicate`)."""
    rows = [r for r in csv.DictReader(io.StringIO(storage.read_text(fmnist["labels"])))
            if r["key"].startswith("train/")][:count]
    storage.ensure_bucket(root)
    for r in rows:
        storage.write_bytes(join(root, r["label"], os.path.basename(r["key"])),
                            storage.read_bytes(join(fmnist["images"], r["key"])))
    if duplicate:
        first = rows[0]
        storage.write_bytes(join(root, first["label"], "zz-copy.png"),
                            storage.read_bytes(join(fmnist["images"], first["key"])))
    return root


def ingest_command(source: str, output: str, *extra) -> list[str]:
    return [sys.executable, "-m", "pipeline", "--source", source, "--output", output, "--name", "fm",
            "--num_readers", "2", "--fetch_threads", "4", "--splits", "train:0.75,test:0.25", *extra]


def ingest(source: str, output: str, *extra, env=None):
    result = run_cli(ingest_command(source, output, *extra)[2:], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def paused_job(command: list[str], phase: str, env: dict | None = None) -> subprocess.Popen:
    """Start the job with the publish test hook set, and return once it waits at `phase`;
    `job.staging` is its staging folder (from its log)."""
    job = subprocess.Popen(command, cwd=ROOT, start_new_session=True, text=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env={**os.environ, "PIPELINE_TEST_PAUSE_AT": phase, **(env or {})})
    deadline = time.monotonic() + 300
    for line in job.stderr:
        if "(staging " in line:
            job.staging = line.rsplit("(staging ", 1)[1].strip().rstrip(")")
        if f"test hook: paused at {phase}" in line:
            threading.Thread(target=job.stderr.read, daemon=True).start()   # never block its writes
            return job
        if time.monotonic() > deadline:
            kill(job)
            raise AssertionError("the job never reached the publish phase")
    job.wait()
    raise AssertionError(f"the job ended (exit {job.returncode}) before publish phase {phase}")


def kill(job: subprocess.Popen) -> None:
    os.killpg(job.pid, signal.SIGKILL)     # the launcher and every worker it started
    job.wait()


def reads_completely(storage, dataset_url: str, manifest: Manifest, tmp_path) -> int:
    """Every record of every shard the manifest names, each shard checked by sha256."""
    return sum(len(found) for found in read_shards(storage, dataset_url, manifest, tmp_path).values())


@pytest.fixture(scope="module")
def source(storage, fmnist) -> str:
    return copy_images(storage, fmnist, "s3://publish/raw", duplicate=True)


def test_each_version_in_its_folder_overwrite_keeps_the_previous_and_retires_older(
        storage, source, tmp_path):
    output = "s3://publish/datasets/kept"
    ingest(source, output)
    v1 = read_manifest(storage, output)
    assert v1.version.startswith("v-") and all(f.startswith(v1.version + "/") for f in v1.files())
    alone = read_manifest(storage, join(output, v1.version))       # a version is a dataset itself
    assert alone.under(v1.version).to_json() == v1.to_json()
    assert reads_completely(storage, output, v1, tmp_path / "1") == IMAGES

    ingest(source, output, "--overwrite", "--num_shards", "3")
    v2 = read_manifest(storage, output)
    assert v2.version != v1.version
    assert reads_completely(storage, output, v1, tmp_path / "1b") == IMAGES    # kept: keep 2
    assert reads_completely(storage, output, v2, tmp_path / "2") == IMAGES

    result = ingest(source, output, "--overwrite", "--num_shards", "4")
    v3 = read_manifest(storage, output)
    assert f"retired {v1.version}" in result.stderr
    assert not list(storage.list(join(output, v1.version)))                 # all of it
    assert reads_completely(storage, output, v2, tmp_path / "2b") == IMAGES

    # The same input again, ingested all the same: the same version, a byte-identical manifest,
    # nothing retired. (Without --reingest the run finds it published and stops: test_ingest.)
    before = storage.read_text(join(output, MANIFEST_NAME))
    again = ingest(source, output, "--overwrite", "--num_shards", "4", "--reingest")
    assert storage.read_text(join(output, MANIFEST_NAME)) == before
    assert "retired" not in again.stderr
    published = {url.split("/")[-2] for url, _ in storage.list(output) if url.endswith(PUBLISHED_NAME)}
    assert published == {v2.version, v3.version}


def test_keep_versions_one_retires_the_previous_at_once(storage, source):
    output = "s3://publish/datasets/keep-one"
    ingest(source, output)
    v1 = read_manifest(storage, output)
    ingest(source, output, "--overwrite", "--num_shards", "3", "--keep_versions", "1")
    assert not list(storage.list(join(output, v1.version)))
    assert read_manifest(storage, output).version != v1.version


def make_flat(storage, versioned: str, flat: str) -> Manifest:
    """A dataset in the layout published before versions: shards and manifest side by side."""
    current = read_manifest(storage, versioned)
    alone = read_manifest(storage, join(versioned, current.version))
    alone.version = None
    for name in alone.files():
        storage.write_bytes(join(flat, name), storage.read_bytes(join(versioned, current.version, name)))
    storage.write_text(join(flat, MANIFEST_NAME), alone.to_json())
    return alone


def test_flat_datasets_are_still_read_then_kept_and_retired_like_a_version(storage, source, tmp_path):
    flat_url = "s3://publish/datasets/flat"
    old = make_flat(storage, "s3://publish/datasets/kept", flat_url)
    read = read_manifest(storage, flat_url)
    assert read.version is None and "/" not in read.splits["train"].shards[0].file
    assert read.shard_urls(flat_url, "train")[0] == join(flat_url, read.splits["train"].shards[0].file)
    cache = ShardCache(storage, flat_url, str(tmp_path / "cache"), 2**30)
    share = reader.rank_share(read, "train", 0, 1, cache)
    paths = [p for p in share.local_paths() if os.path.exists(p)]       # each checked while read
    assert share.records == read.splits["train"].num_records and len(paths) == len(share.shards)

    ingest(source, flat_url, "--overwrite")
    assert read_manifest(storage, flat_url).version                        # now versioned
    assert json.loads(storage.read_text(join(flat_url, FLAT_MANIFEST))) == json.loads(old.to_json())
    assert reads_completely(storage, flat_url, old, tmp_path / "flat") == IMAGES   # kept: keep 2

    ingest(source, flat_url, "--overwrite", "--num_shards", "3")
    left = {url[len(flat_url) + 1:] for url, _ in storage.list(flat_url)}
    assert not left & set(old.files()) and FLAT_MANIFEST not in left        # retired in turn
    assert all(name.startswith("v-") or name.startswith(".") or name == MANIFEST_NAME for name in left)


@pytest.mark.parametrize("where", ["s3", "local"])
def test_conditional_writes_create_once_and_replace_only_what_was_read(storage, tmp_path, where):
    url = "s3://publish/conditional/manifest.json" if where == "s3" else str(tmp_path / "manifest.json")
    storage.ensure_bucket(url)
    first = storage.write_bytes(url, b"one", if_none_match=True)
    with pytest.raises(WriteConflict):
        storage.write_bytes(url, b"two", if_none_match=True)          # someone published first
    assert storage.read_versioned(url) == (b"one", first)
    second = storage.write_bytes(url, b"two", if_match=first)
    with pytest.raises(WriteConflict):
        storage.write_bytes(url, b"three", if_match=first)             # changed since it was read
    assert storage.read_bytes(url) == b"two" and storage.read_versioned(url)[1] == second
    storage.delete(url)
    with pytest.raises(WriteConflict):
        storage.write_bytes(url, b"four", if_match=second)             # deleted since it was read


@pytest.mark.parametrize("where", ["s3", "local"])
def test_a_conditional_delete_removes_only_what_was_read(storage, tmp_path, where):
    url = "s3://publish/conditional/LOCK" if where == "s3" else str(tmp_path / "LOCK")
    storage.ensure_bucket(url)
    first = storage.write_bytes(url, b"ours")
    second = storage.write_bytes(url, b"theirs", if_match=first)       # taken over meanwhile
    with pytest.raises(WriteConflict):
        storage.delete(url, if_match=first)
    assert storage.read_bytes(url) == b"theirs"
    storage.delete(url, if_match=second)
    assert not storage.exists(url)
    with pytest.raises(WriteConflict):
        storage.delete(url, if_match=second)                           # gone already
    storage.delete(url)                                                # unconditional: no error


def test_a_local_dataset_is_versioned_too(storage, tmp_path):
    source = tmp_path / "images"
    for i in range(12):
        (source / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        (source / "ab"[i % 2] / f"{i}.png").write_bytes(png(8, 8, 1, seed=i))
    output = str(tmp_path / "out")
    local = ["--num_readers", "1", "--direct_num_workers", "1"]
    ingest(str(source), output, *local)
    v1 = read_manifest(storage, output)
    ingest(str(source), output, *local, "--overwrite", "--num_shards", "2")
    v2 = read_manifest(storage, output)
    assert v2.version != v1.version and os.path.isdir(os.path.join(output, v1.version))
    assert all(os.path.isfile(os.path.join(output, f)) for f in v1.files() + v2.files())

