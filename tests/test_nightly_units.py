"""The nightly's parts without training: config errors, the lock on a real S3 server and on
local disk, the promotion rule, and the MPIJob launcher's flow."""
from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from infra.nightly import config as nightly_config, launch as nightly_launch, promote as nightly_promote
from infra.nightly.lock import LockHeld, LockLost, NightlyLock
from tests.conftest import ROOT, run_cli

BASE_TEMPLATE = f"{ROOT}/k8s/base/mpijob-trainer.yaml"


def write_config(tmp_path, body: dict) -> str:
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


GOOD = {"name": "m", "root": "s3://bucket", "ingest": {"source": "s3://raw/x", "labels_file": "s3://raw/l.csv", "classes": "a,b"},
        "evaluation": {"dataset": "s3://bucket/eval"}}


@pytest.mark.parametrize("change, message", [
    ({"root": None}, "missing required key 'root'"),
    ({"train": {"launcher": "slurm"}}, "train.launcher must be one of local, mpijob"),
    ({"train": {"epochs": 0}}, "train.epochs must be a positive integer"),
    ({"promotion": {"tolerance": -1}}, "promotion.tolerance must be a number >= 0"),
    ({"evaluation": {"dataset": "s3://b/e", "metric": "auc"}}, "evaluation.metric must be one of"),
    ({"root": "relative/dir"}, "root must be an s3:// URL or an absolute path"),
    ({"ingest": {"args": ["--s3_secret_access_key", "SENTINEL"]}},
     "ingest.args holds --s3_secret_access_key: a credential on a command line"),
    ({"ingest": {"args": ["--s3_session_token=SENTINEL"]}}, "ingest.args holds --s3_session_token"),
    ({"train": {"timeout_seconds": 0}}, "train.timeout_seconds must be a positive integer"),
    ({"score": {"output": "s3://b/s"}}, "score must be null or a mapping with a source"),
    ({"score": {"source": "s3://in/{date}", "timeout_seconds": -1}}, "score.timeout_seconds must be a positive"),
    ({"score": {"source": "s3://in/{date}", "args": ["--s3_access_key_id=SENTINEL"]}},
     "score.args holds --s3_access_key_id"),
])
def test_bad_config_is_one_clear_line(tmp_path, change, message):
    body = nightly_config.merge(GOOD, change)
    if change.get("root", "") is None:
        del body["root"]
    result = run_cli(["infra.nightly", "--config", write_config(tmp_path, body)])
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "SENTINEL" not in result.stderr


def test_missing_config_file_and_bad_date(tmp_path):
    result = run_cli(["infra.nightly", "--config", str(tmp_path / "absent.yaml")])
    assert result.returncode == 2 and "cannot read config" in result.stderr
    result = run_cli(["infra.nightly", "--config", write_config(tmp_path, GOOD), "--date", "2026-13-40"])
    assert result.returncode == 2 and "--date must be YYYY-MM-DD" in result.stderr


def test_help_documents_exit_codes():
    result = run_cli(["infra.nightly", "--help"])
    assert result.returncode == 0
    for line in ("0  promoted", "3  not promoted", "4  another run holds the lock", "1  failed"):
        assert line in result.stdout


def test_promotion_rule():
    assert nightly_promote.decide(0.5, None, 0.0) == (True, "no promoted model yet")
    assert nightly_promote.decide(0.795, 0.8, 0.01)[0] is True         # within the tolerance
    assert nightly_promote.decide(0.789, 0.8, 0.01)[0] is False        # worse by more than it
    assert nightly_promote.decide(0.9, 0.8, 0.0)[0] is True


@pytest.fixture(params=["s3", "local"])
def lock_url(request, storage, tmp_path):
    if request.param == "local":
        return str(tmp_path / "models" / "LOCK")
    storage.ensure_bucket("s3://locks")
    return f"s3://locks/{request.node.name}/LOCK"


def test_second_lock_refused_until_released(storage, lock_url):
    first = NightlyLock(storage, lock_url, ttl_seconds=30, run_id="first", log=lambda *_: None)
    first.acquire()
    try:
        with pytest.raises(LockHeld, match="run first"):
            NightlyLock(storage, lock_url, ttl_seconds=30, run_id="second").acquire()
        first.verify()
    finally:
        first.release()
    with NightlyLock(storage, lock_url, ttl_seconds=30, run_id="third"):
        pass


def test_heartbeat_keeps_a_short_lock_fresh(storage, lock_url):
    with NightlyLock(storage, lock_url, ttl_seconds=3, run_id="long", log=lambda *_: None):
        time.sleep(4.5)                   # past the first expiry: only the heartbeat keeps it
        with pytest.raises(LockHeld):
            NightlyLock(storage, lock_url, ttl_seconds=3, run_id="other").acquire()


def test_stale_lock_of_a_crashed_run_is_taken_over(storage, lock_url):
    # What a run killed with SIGKILL leaves behind: its lock, with no heartbeat since.
    stale = {"run_id": "crashed", "host": "h", "pid": 1, "started": "2026-01-01T00:00:00Z",
             "nonce": "x", "expires": time.time() - 5}
    storage.write_text(lock_url, json.dumps(stale))
    said = []
    lock = NightlyLock(storage, lock_url, ttl_seconds=30, run_id="next", log=said.append)
    lock.acquire()
    try:
        assert "took over the stale lock of run crashed" in said[0]
        lock.verify()
        # A stalled holder whose lock was taken over must not promote.
        storage.write_text(lock_url, json.dumps({**stale, "run_id": "thief", "nonce": "y",
                                                 "expires": time.time() + 60}))
        with pytest.raises(LockLost):
            lock.verify()
    finally:
        lock.release()
    assert json.loads(storage.read_text(lock_url))["run_id"] == "thief"   # not ours to delete


class FakeKubeAPI:
    """Stands in for the Kubernetes API server (none runs here): records calls and answers
    GETs with a scripted sequence of MPIJob conditions. Named a fake on purpose."""

    def __init__(self, create_status: int, states: list[dict]):
        self.create_status, self.states, self.calls = create_status, states, []

    def call(self, method, path, body=None):
        self.calls.append((method, path, body))
        if method == "POST":
            return self.create_status, {"message": "exists"} if self.create_status == 409 else body
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return 200, {"status": {"conditions": [{"type": k, "status": v} for k, v in state.items()]}}


def settings(tmp_path):
    return {"template": BASE_TEMPLATE, "namespace": "ml", "timeout_seconds": 30, "poll_seconds": 0.01}


def test_mpijob_names_differ_for_names_that_differ():
    """Cut to 52 characters, two long model names (or two spellings of one) once gave one name
    every night: a 409 from the first, then "no COMMITTED marker"."""
    long_a, long_b = "resnet50-imagenet-finetune-" + "a" * 40, "resnet50-imagenet-finetune-" + "a" * 39 + "b"
    names = {nightly_launch.job_name(m, "2026-01-02")
             for m in ("fashion_mnist", "Fashion-MNIST", long_a, long_b)}
    assert len(names) == 4
    assert all(len(n) <= 52 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", n) for n in names)
    assert nightly_launch.job_name(long_a, "2026-01-02") == nightly_launch.job_name(long_a, "2026-01-02")


def test_mpijob_created_and_followed_until_it_succeeds(tmp_path):
    api = FakeKubeAPI(201, [{"Created": "True"}, {"Running": "True"}, {"Succeeded": "True"}])
    flags = nightly_launch.trainer_flags("s3://b/d", "s3://b/v", {"epochs": 1, "batch_size": 8, "args": []}, None)
    nightly_launch.run_mpijob(flags, "fashion_mnist", "2026-01-02", settings(tmp_path), log=lambda *_: None, api=api)
    method, path, job = api.calls[0]
    assert (method, path) == ("POST", "/apis/kubeflow.org/v2beta1/namespaces/ml/mpijobs")
    assert job["metadata"]["name"] == nightly_launch.job_name("fashion_mnist", "2026-01-02")
    assert job["metadata"]["name"].startswith("train-fashion-mnist-2026-01-02-")
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["args"][:2] == ["-np", "8"]        # 2 workers x 4 slots in the base template
    assert launcher["args"][-len(flags):] == flags


def test_mpijob_from_an_earlier_try_is_followed_and_failure_reported(tmp_path):
    api = FakeKubeAPI(409, [{"Running": "True"}, {"Failed": "True"}])
    with pytest.raises(nightly_launch.TrainingFailed, match="failed; see `kubectl logs"):
        nightly_launch.run_mpijob(["--dataset", "x"], "m", "2026-01-02", settings(tmp_path),
                                  log=lambda *_: None, api=api)
    assert [c[0] for c in api.calls][:2] == ["POST", "GET"]


def test_mpijob_launcher_outside_kubernetes_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(nightly_launch.TrainingFailed, match="runs inside Kubernetes"):
        nightly_launch.run_mpijob(["--dataset", "x"], "m", "2026-01-02", settings(tmp_path), log=lambda *_: None)


def test_corrupt_pointer_fails_the_night_with_one_line(storage, tmp_path):
    storage.ensure_bucket("s3://nightly-units")
    storage.write_text("s3://nightly-units/models/m/PROMOTED", "{not json")
    path = write_config(tmp_path, {**GOOD, "root": "s3://nightly-units"})
    result = run_cli(["infra.nightly", "--config", path, "--date", "2026-01-01", "--report", str(tmp_path / "r.json")])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED (s3://nightly-units/models/m/PROMOTED is not JSON; fix or remove it by hand)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "failed"
    assert storage.read_text("s3://nightly-units/models/m/PROMOTED") == "{not json"
    assert not storage.exists("s3://nightly-units/models/m/LOCK")
