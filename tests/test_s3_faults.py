"""The project against the faults a real object store produces every day, made on purpose by the
fault-injecting proxy (infra/local/faultproxy.py, a test utility) in front of the real S3
server (SeaweedFS): bodies cut short, replies lost after the server applied a write, 503/500,
delays. Reads are repeated until whole, a commit whose reply was lost is found to be ours, what
cannot be survived says what the server answered; the ingestion job publishes byte for byte what
it publishes without faults, and the trainer ends with the same weights after a kill -9 and a
resume through the proxy."""
from __future__ import annotations

import json
import os
import re
import sys

import pytest

from infra.local.faultproxy import FaultProxy
from infra.local.processes import free_port
from infra.nightly import promote
from pipeline.dataset.storage import Storage, TransientStorageError, WriteConflict
from tests.conftest import run_cli
from tests.helpers import kill_rank_when
from tests.test_trainer_faults import committed_mid_epoch

BUCKET = "s3://faults"
EVERY_KIND = {"slowdown": 0.1, "internal": 0.1, "cut": 0.1, "lost": 0.1, "delay": 0.02}   # 10 % of each


@pytest.fixture(scope="module")
def objects(storage) -> dict[str, bytes]:
    storage.ensure_bucket(BUCKET)
    items = {f"{BUCKET}/objects/{i:03d}": os.urandom(3000 + i) for i in range(40)}
    for url, data in items.items():
        storage.write_bytes(url, data)
    return items


def through(proxy: FaultProxy) -> Storage:
    return Storage(endpoint_url=proxy.endpoint_url)


def test_a_body_cut_short_is_read_again_until_whole(s3, objects):
    with FaultProxy(s3.endpoint_url, seed=2, cut=0.3) as proxy:
        assert {url: through(proxy).read_bytes(url) for url in objects} == objects
        assert proxy.injected["cut"] > 10
        assert through(proxy).read_range(next(iter(objects)), 100, 200) == next(iter(objects.values()))[100:200]


def test_a_body_that_always_breaks_says_the_server_answered(s3, objects):
    url = next(iter(objects))
    with FaultProxy(s3.endpoint_url, cut=1.0) as proxy:
        with pytest.raises(TransientStorageError, match=r"the server answered, but the body broke off") as e:
            through(proxy).read_bytes(url)
    assert "cannot reach" not in str(e.value) and url in str(e.value)


def test_a_busy_server_and_no_server_are_told_apart(s3, objects):
    url = next(iter(objects))
    with FaultProxy(s3.endpoint_url, slowdown=1.0) as proxy:
        with pytest.raises(TransientStorageError, match=r"answered 503 SlowDown after 8 tries"):
            through(proxy).read_bytes(url)
    with pytest.raises(TransientStorageError, match="cannot reach S3 at"):
        Storage(endpoint_url=f"http://127.0.0.1:{free_port()}").read_bytes(url)


@pytest.mark.parametrize("condition", ["create", "replace"])
def test_a_conditional_write_whose_reply_was_lost_is_ours(s3, storage, condition):
    url = f"{BUCKET}/commits/{condition}"
    storage.delete(url)
    token = storage.write_bytes(url, b"before") if condition == "replace" else None
    ours = json.dumps({"version": "v-ours", "condition": condition}).encode()
    with FaultProxy(s3.endpoint_url, lost=1.0, target=f"commits/{condition}", limit=1) as proxy:
        written = through(proxy).write_bytes(url, ours, if_none_match=condition == "create", if_match=token)
        assert proxy.injected["lost"] == 1             # applied, its reply lost, retried: 412
    assert storage.read_versioned(url) == (ours, written)
    with pytest.raises(WriteConflict):                   # someone else's bytes: still a conflict
        storage.write_bytes(url, b"theirs", if_none_match=True)


def test_a_marker_and_the_nightly_pointer_survive_a_lost_reply(s3, storage):
    models = f"{BUCKET}/models/m"
    storage.delete(promote.pointer_url(models))
    pointer = {"version": "2026-01-01", "model_dir": f"{models}/versions/2026-01-01/model"}
    with FaultProxy(s3.endpoint_url, lost=1.0, target="models/m/", limit=2) as proxy:
        through(proxy).write_text(f"{models}/versions/2026-01-01/model/COMMITTED", "")   # a plain PUT
        promote.write_pointer(through(proxy), models, pointer, token=None)           # create-only
        assert proxy.injected["lost"] == 2
    assert json.loads(storage.read_text(promote.pointer_url(models))) == pointer
    assert storage.exists(f"{models}/versions/2026-01-01/model/COMMITTED")


def ingest_through(proxy: FaultProxy | None, fmnist: dict, output: str, *extra: str):
    env = {"AWS_ENDPOINT_URL_S3": proxy.endpoint_url} if proxy else {}
    return run_cli(["pipeline", "--source", fmnist["images"], "--labels_file", fmnist["labels"],
                    "--classes", fmnist["classes"], "--output", output, "--name", "clean",
                    "--num_readers", "2", "--splits", "train:0.8,validation:0.2", *extra], env=env)


def test_ingestion_under_ten_percent_faults_publishes_the_same_bytes(s3, storage, fmnist, dataset):
    """`dataset` is the session's fault-free run of the same input and flags."""
    output = "s3://fmnist/datasets/through-faults"
    with FaultProxy(s3.endpoint_url, seed=5, delay_seconds=1.0, **EVERY_KIND) as proxy:
        result = ingest_through(proxy, fmnist, output)
        injected = dict(proxy.injected)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert injected["cut"] and injected["lost"] and injected["slowdown"] and injected["internal"], injected
    ours, fault_free = (without_run_identity(storage.read_text(f"{url}/manifest.json")) for url in (output, dataset))
    assert ours == fault_free                            # every shard's sha256, counts, statistics


def without_run_identity(text: str) -> dict:
    """A manifest but for its version id and input fingerprint, which name the flags (--name
    here differs from the fault-free run's default) and so differ between the two runs."""
    manifest = json.loads(text)
    manifest["source"].pop("fingerprint", None)
    version = manifest.pop("version")
    return json.loads(json.dumps(manifest).replace(version + "/", "<version>/"))


def test_a_lost_reply_to_the_dataset_commit_is_no_rival_publisher(s3, storage, fmnist):
    output = "s3://fmnist/datasets/lost-commit"
    with FaultProxy(s3.endpoint_url, lost=1.0, target="lost-commit/manifest.json", limit=1) as proxy:
        result = ingest_through(proxy, fmnist, output)
        assert proxy.injected["lost"] == 1
    assert result.returncode == 0, result.stderr[-3000:]
    assert "another run published" not in result.stderr
    assert storage.exists(f"{output}/{json.loads(storage.read_text(f'{output}/manifest.json'))['version']}/PUBLISHED.json")


def train_command(dataset: str, checkpoints: str, cache) -> list[str]:
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-u", "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", "2", "--batch-size", "8",
            "--warmup-epochs", "0", "--checkpoint-every", "3", "--cache-dir", str(cache), "--no-tensorboard"]


def weights(output: str) -> set[str]:
    return set(re.findall(r"weights sha256 ([0-9a-f]+)", output))


def test_training_killed_and_resumed_through_faults_ends_with_the_same_weights(s3, storage, dataset, tmp_path):
    storage.ensure_bucket(BUCKET)
    clean = run_cli(train_command(dataset, "s3://faults/runs/clean", tmp_path / "a"), timeout=900)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-2000:]
    checkpoints = "s3://faults/runs/through-faults"
    with FaultProxy(s3.endpoint_url, seed=9, delay_seconds=1.0, **EVERY_KIND) as proxy:
        saved, os.environ["AWS_ENDPOINT_URL_S3"] = os.environ["AWS_ENDPOINT_URL_S3"], proxy.endpoint_url
        try:                 # the trainer's processes inherit this environment: they talk to the proxy
            code, _ = kill_rank_when(train_command(dataset, checkpoints, tmp_path / "b"), checkpoints,
                                     lambda _: committed_mid_epoch(storage, checkpoints))
            resumed = run_cli(train_command(dataset, checkpoints, tmp_path / "b"), timeout=900)
        finally:
            os.environ["AWS_ENDPOINT_URL_S3"] = saved
        injected = dict(proxy.injected)
    assert code != 0
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert re.search(r"resumed from .*ckpt-\d+: epoch \d, \d of \d+ batches done", resumed.stdout)
    assert injected["cut"] + injected["lost"] + injected["slowdown"] + injected["internal"] > 0, injected
    assert weights(resumed.stdout) == weights(clean.stdout) and len(weights(clean.stdout)) == 1
