"""kill -9 of the S3 server itself (a real SeaweedFS, its own for this test, with a data
directory) in the middle of an ingestion and of a training run: each job ends with one clear
line saying the store could not be reached (the trainer with exit 75: run it again), nothing
half-published; once the server is back on the same data directory nothing that was
acknowledged is lost, the ingestion re-run publishes and the training run resumes to the end."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from infra.local import fashion_mnist
from infra.local.s3server import LocalS3
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage, join
from tests.conftest import ROOT
from tests.test_trainer_faults import committed_mid_epoch


class Server:
    """One SeaweedFS that can be killed and started again on its port and data directory."""

    def __init__(self, tmp_path):
        self.data, self.log = str(tmp_path / "data"), str(tmp_path / "server.log")
        self.s3 = LocalS3(data_dir=self.data, log_path=self.log).start()

    def kill(self):
        os.kill(self.s3.process.pid, signal.SIGKILL)
        self.s3.process.wait()
        self.s3.stop()                         # its run directory; the data directory stays

    def start_again(self):
        self.s3 = LocalS3(port=self.s3.port, data_dir=self.data, log_path=self.log).start()

    def env(self) -> dict:
        return {**os.environ, **self.s3.env()}

    def storage(self) -> Storage:
        return Storage(endpoint_url=self.s3.endpoint_url)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("killed-s3"))
    saved = {k: os.environ.get(k) for k in s.s3.env()}
    os.environ.update(s.s3.env())              # this module's Storage() and boto3 calls go there
    s.storage().ensure_bucket("s3://killed")
    s.raw = fashion_mnist.upload(s.storage(), "s3://killed/raw", limit=100, log=lambda *_: None)
    yield s
    s.s3.stop()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def start(command: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-3000:]
        time.sleep(0.1)


def ingest_command(raw: dict, output: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "--source", raw["images"], "--labels_file", raw["labels"],
            "--classes", raw["classes"], "--output", output, "--num_readers", "2", "--fetch_threads", "1"]


def test_the_server_killed_mid_ingestion(server):
    output = "s3://killed/datasets/fm"
    job = start(ingest_command(server.raw, output), server.env())
    storage = server.storage()
    wait_for(lambda: any("/.staging-" in url for url, _ in storage.list(output)), job)
    server.kill()
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 1, out[-3000:]
    failure = [line for line in out.splitlines() if line.startswith("pipeline: failed")]
    assert len(failure) == 1 and "cannot reach S3" in failure[0], out[-3000:]

    server.start_again()
    storage = server.storage()
    assert not storage.exists(join(output, "manifest.json"))          # nothing half-published
    assert len(list(storage.list(server.raw["images"]))) == 200       # every uploaded image is there
    rerun = subprocess.run(ingest_command(server.raw, output), cwd=ROOT, env=server.env(),
                           text=True, capture_output=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    manifest = read_manifest(storage, output)
    assert sum(s.num_records for s in manifest.splits.values()) == 200


def train_command(dataset: str, checkpoints: str, cache) -> list[str]:
    return ["horovodrun", "-np", "2", "-H", "localhost:2", sys.executable, "-u", "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", "4", "--batch-size", "8",
            "--warmup-epochs", "0", "--checkpoint-every", "2", "--cache-dir", str(cache), "--no-tensorboard"]


def test_the_server_killed_mid_training(server, tmp_path):
    dataset, checkpoints = "s3://killed/datasets/fm", "s3://killed/runs/a"
    if not server.storage().exists(join(dataset, "manifest.json")):
        pytest.skip("needs the dataset the ingestion test published")
    run = start(train_command(dataset, checkpoints, tmp_path), server.env())
    wait_for(lambda: committed_mid_epoch(server.storage(), checkpoints), run)
    server.kill()
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 75, out[-3000:]          # mpirun passes on the first rank's code: run it again
    errors = [line.split("trainer: error: ", 1)[1] for line in out.splitlines() if "trainer: error: " in line]
    assert "cannot reach S3" in errors[0], out[-3000:]
    assert all("another rank failed first" in e for e in errors[1:]), out[-3000:]
    assert "Traceback" not in out, out[-3000:]

    server.start_again()
    resumed = subprocess.run(train_command(dataset, checkpoints, tmp_path), cwd=ROOT, env=server.env(),
                             text=True, capture_output=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
