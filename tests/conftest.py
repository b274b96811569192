"""Shared fixtures: one real S3 server (SeaweedFS over HTTP on loopback, checking every request
against its generated identity) for the session, real Fashion-MNIST images in it, and a dataset
published by the real Beam job."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.local import fashion_mnist
from infra.local.s3server import LocalS3
from pipeline.dataset.storage import Storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES_PER_SPLIT = 150


def run_cli(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m ...` (or any command) the way a user would, capturing its output."""
    command = args if args[0] == "horovodrun" else [sys.executable, "-m", *args]
    return subprocess.run(command, env={**os.environ, **(env or {})}, cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """The session's S3 server; its endpoint and credentials are in os.environ while it runs."""
    server = LocalS3(log_path=str(tmp_path_factory.mktemp("s3") / "server.log")).start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())        # subprocesses inherit it, as a user's shell would
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def storage(s3) -> Storage:
    return Storage()


@pytest.fixture(scope="session")
def fmnist(storage) -> dict:
    """150 train + 150 test real Fashion-MNIST PNGs in s3://fmnist/raw, labels.csv, classes.txt."""
    return fashion_mnist.upload(storage, "s3://fmnist/raw", limit=IMAGES_PER_SPLIT, log=lambda *_: None)


@pytest.fixture(scope="session")
def dataset(fmnist) -> str:
    """A dataset published by the real Beam job from the clean images (no bad input)."""
    return ingest(fmnist, "s3://fmnist/datasets/clean", "train:0.8,validation:0.2")


def ingest(raw: dict, url: str, splits: str) -> str:
    """Publish the uploaded images `raw` (fashion_mnist.upload's URLs) at `url` with the real Beam job."""
    result = run_cli(["pipeline", "--source", raw["images"], "--labels_file", raw["labels"],
                      "--classes", raw["classes"], "--output", url, "--num_readers", "2",
                      "--splits", splits])
    assert result.returncode == 0, result.stderr[-3000:]
    return url


def ingest_folders(source: str, url: str, splits: str) -> str:
    """Publish the folders layout at `source` (<class>/<image>) at `url` with the real Beam job."""
    result = run_cli(["pipeline", "--source", source, "--output", url, "--num_readers", "2",
                      "--splits", splits])
    assert result.returncode == 0, result.stderr[-3000:]
    return url


@pytest.fixture(scope="session")
def cassandra(tmp_path_factory):
    """A real Cassandra 2.1 (JVM, CQL over the wire) on a free port; started only by tests that
    ask for it. Tests may stop() and start() it again: the data directory is kept."""
    from infra.local.cassandra import LocalCassandra

    server = LocalCassandra(run_dir=str(tmp_path_factory.mktemp("cassandra"))).start()
    yield server
    server.stop()
