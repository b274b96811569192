"""The nightly's gates against the real S3 server: the data check before training (one real
night whose span is 40 % corrupt images ends with exit 5 and trains nothing), promotion bounded
by the best promoted score (ten nights each a little worse, driven through Night.promote with
scores), and a pointer write that a lock taken over meanwhile prevents (a real stalled process:
SIGSTOP past the lock's expiry)."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from infra.nightly import config as nightly_config, datacheck, promote
from infra.nightly.lock import NightlyLock
from infra.nightly.night import NOT_PROMOTED, PROMOTED, Night
from pipeline.dataset.manifest import Manifest, Shard, Split
from pipeline.dataset.storage import join
from tests.conftest import ROOT, run_cli
from tests.helpers import png
from tests.test_nightly_units import GOOD, write_config

LIMITS = nightly_config.DEFAULTS["data_check"]


def manifest(counts: list[int], quarantined: int = 0) -> Manifest:
    split = Split(shards=[Shard("s", sum(counts), 1, "x")], class_counts=counts)
    return Manifest(name="m", classes=["a", "b", "c"], image_shape=None, splits={"train": split},
                    quarantine={"count": quarantined}, source={})


def test_data_check_figures_and_thresholds():
    base = manifest([100, 100, 100])
    assert datacheck.check(manifest([98, 103, 99], 5), base, LIMITS).ok
    vanished = datacheck.check(manifest([150, 150, 0]), base, LIMITS)
    assert vanished.problems == ["class 'c' is 0.0% of the span against 33.3% before (change 100%, max 50%)"]
    shrunk = datacheck.check(manifest([40, 40, 40]), base, LIMITS)
    assert shrunk.problems == ["120 records against 300 before (change 60%, max 50%)"]
    flooded = datacheck.check(manifest([60, 60, 60], 120), None, LIMITS)     # no baseline needed
    assert flooded.problems == ["40.0% of the span's images were quarantined (max 5.0%)"]
    assert flooded.figures == {"quarantine_rate": 0.4}
    assert datacheck.check(manifest([60, 60, 60], 120), None, {**LIMITS, "max_quarantine_rate": None}).ok


@pytest.mark.parametrize("key, value", [("max_quarantine_rate", 1.5), ("max_class_share_change", -1),
                                        ("max_record_count_change", "half")])
def test_bad_data_check_config_is_one_line(tmp_path, key, value):
    result = run_cli(["infra.nightly", "--config", write_config(tmp_path, {**GOOD, "data_check": {key: value}})])
    assert result.returncode == 2 and f"data_check.{key} must be a number >= 0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_documents_the_data_check_exit_code():
    result = run_cli(["infra.nightly", "--help"])
    assert "5  the night's data failed the data check" in result.stdout


@pytest.fixture(scope="module")
def dirty_span(storage, fmnist) -> dict:
    """30 real images and 20 truncated ones (40 %), all labelled, under s3://gates/raw."""
    rows = [r for r in csv.DictReader(io.StringIO(storage.read_text(fmnist["labels"])))
            if r["key"].startswith("train/")][:30]
    storage.ensure_bucket("s3://gates")
    lines = ["key,label,split"]
    for r in rows:
        storage.write_bytes(join("s3://gates/raw/images", r["key"]),
                            storage.read_bytes(join(fmnist["images"], r["key"])))
        lines.append(f"{r['key']},{r['label']},")
    for i in range(20):
        storage.write_bytes(f"s3://gates/raw/images/bad/{i}.png", png(28, 28, 1, seed=i)[:60])
        lines.append(f"bad/{i}.png,Coat,")
    storage.write_text("s3://gates/raw/labels.csv", "\n".join(lines) + "\n")
    return {"images": "s3://gates/raw/images", "labels": "s3://gates/raw/labels.csv"}


def test_a_span_with_40_percent_corrupt_images_stops_before_training(storage, fmnist, dataset,
                                                                  dirty_span, tmp_path):
    body = {"name": "dirty", "root": "s3://gates",
            "ingest": {"source": dirty_span["images"], "labels_file": dirty_span["labels"],
                       "classes": fmnist["classes"],
                       "args": ["--num_readers", "2"]},
            "train": {"processes": 2, "epochs": 1, "batch_size": 16},
            "evaluation": {"dataset": dataset, "split": "test"}}
    path = tmp_path / "dirty.yaml"
    path.write_text(yaml.safe_dump(body))
    command = ["infra.nightly", "--config", str(path), "--date", "2026-03-01", "--report",
               str(tmp_path / "report.json"), "--cache-dir", str(tmp_path / "cache")]
    result = run_cli(command, timeout=600)
    assert result.returncode == 5, result.stdout[-3000:] + result.stderr[-2000:]
    assert ("DATA CHECK FAILED (40.0% of the span's images were quarantined (max 5.0%)); nothing "
            "trained") in result.stdout
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr
    assert "== nightly dirty 2026-03-01: train" not in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "data_check_failed" and report["exit_code"] == 5
    assert report["data_check"]["quarantine_rate"] == 0.4 and report["data_check"]["ok"] is False
    assert not list(storage.list("s3://gates/models/dirty/versions"))          # nothing trained
    assert not storage.exists("s3://gates/models/dirty/PROMOTED")

    again = run_cli(command, timeout=300)              # the span is published: checked again only
    assert again.returncode == 5 and "is already published; not ingesting it again" in again.stdout


def night_config(root: str) -> nightly_config.NightlyConfig:
    return nightly_config.from_dict({**GOOD, "name": "drift", "root": root,
                                     "promotion": {"tolerance": 0.01}, "lock": {"ttl_seconds": 30}})


def test_ten_nights_each_a_little_worse_stop_promoting_once_they_drift_past_the_bound(storage, tmp_path):
    storage.ensure_bucket("s3://gates")
    config = night_config("s3://gates/ten")
    decisions = []
    for night_index in range(10):
        date, score = f"2026-04-{night_index + 1:02d}", round(0.9 - 0.004 * night_index, 4)
        night = Night(config, date, storage, str(tmp_path))
        with NightlyLock(storage, join(config.models_url, "LOCK"), 30, night.run_id, log=lambda *_: None) as lock:
            pointer, token = promote.read_pointer_token(storage, config.models_url)
            current = pointer["value"] if pointer else None       # its score on the same split
            code = night.promote(lock, pointer, token, join(config.version_url(date), "model"), score, current)
        decisions.append((date, score, code == PROMOTED, night.report["decision"]["reason"]))
    promoted = [d for d in decisions if d[2]]
    assert [d[0] for d in promoted] == ["2026-04-01", "2026-04-02", "2026-04-03"], decisions
    assert all(code is False for _, _, code, _ in decisions[3:])
    assert "drifted" in decisions[4][3] and "best promoted 0.9000" in decisions[4][3]
    pointer = promote.read_pointer(storage, config.models_url)
    assert pointer["version"] == "2026-04-03" and pointer["best"]["value"] == 0.9
    assert pointer["value"] >= pointer["best"]["value"] - 0.01                  # never further
    # The rule without the best-score bar would have promoted all ten, 0.036 below the best.
    assert all(promote.decide(0.9 - 0.004 * (i + 1), 0.9 - 0.004 * i, 0.01)[0] for i in range(9))


def test_the_pointer_write_is_conditional_on_the_pointer_the_night_read(storage):
    storage.ensure_bucket("s3://gates")
    models = "s3://gates/conditional/models/m"
    _, token = promote.read_pointer_token(storage, models)
    promote.write_pointer(storage, models, {"version": "a"}, token)
    with pytest.raises(promote.PointerMoved):
        promote.write_pointer(storage, models, {"version": "b"}, token)     # read before "a"
    _, token = promote.read_pointer_token(storage, models)
    promote.write_pointer(storage, models, {"version": "c"}, token)
    assert promote.read_pointer(storage, models)["version"] == "c"


STALLED_NIGHT = """
import json, sys
from infra.nightly import config, promote
from infra.nightly.lock import LockLost, NightlyLock
from infra.nightly.night import Night
from pipeline.dataset.storage import Storage, join
cfg = config.from_dict(json.loads(sys.argv[1]))
storage = Storage()
night = Night(cfg, "2026-05-02", storage, "/tmp")
lock = NightlyLock(storage, join(cfg.models_url, "LOCK"), cfg.raw["lock"]["ttl_seconds"], night.run_id)
lock.acquire()
pointer, token = promote.read_pointer_token(storage, cfg.models_url)
print("evaluated; about to promote", flush=True)
sys.stdin.readline()
try:
    night.promote(lock, pointer, token, join(cfg.version_url("2026-05-02"), "model"), 0.95, pointer["value"])
    print("promoted", flush=True)
except LockLost as e:
    print(f"LockLost: {e}", flush=True)
"""


def test_a_lock_taken_over_while_a_night_finishes_prevents_its_pointer_write(storage, tmp_path):
    storage.ensure_bucket("s3://gates")
    root, ttl = "s3://gates/takeover", 3
    config = nightly_config.from_dict({**GOOD, "name": "m", "root": root, "lock": {"ttl_seconds": ttl}})
    promote.write_pointer(storage, config.models_url, {"version": "2026-05-01", "value": 0.9,
                                                       "model_dir": "m1", "metric": "accuracy"}, None)
    before = storage.read_text(promote.pointer_url(config.models_url))
    night = subprocess.Popen([sys.executable, "-c", STALLED_NIGHT, json.dumps(config.raw)], cwd=ROOT,
                             text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ROOT})
    assert "about to promote" in night.stdout.readline()
    os.kill(night.pid, signal.SIGSTOP)              # stalled: no heartbeat, the lease runs out
    try:
        time.sleep(ttl + 1)
        said = []
        thief = NightlyLock(storage, join(config.models_url, "LOCK"), 30, "next-run", log=said.append)
        thief.acquire()
        assert said and "took over the stale lock" in said[0]
    finally:
        os.kill(night.pid, signal.SIGCONT)
    out, _ = night.communicate("go\n", timeout=60)
    try:
        assert "LockLost: lost the lock" in out and "promoted" not in out.replace("nothing promoted", ""), out
        assert storage.read_text(promote.pointer_url(config.models_url)) == before
    finally:
        thief.release()
