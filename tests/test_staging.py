"""How the next run sorts what earlier runs left beside an output (pipeline/staging.py), on a
local output folder; killed real jobs: tests/test_publish_crash.py, test_ingest_layouts.py."""
import json
import os
import time

from pipeline import staging
from pipeline.dataset.storage import Storage


def folder(root, name, files=("a.tfrecord",), expires=None):
    path = root / name
    path.mkdir()
    for f in files:
        (path / f).write_bytes(b"x")
    if expires is not None:
        (path / "LEASE.json").write_text(json.dumps({"expires": expires}))
    return str(path)


def test_expired_live_unknown_and_empty_staging_folders(tmp_path):
    now = time.time()
    dead = folder(tmp_path, ".staging-dead", expires=now - 1)
    live = folder(tmp_path, ".staging-live", expires=now + 60)
    old = folder(tmp_path, ".staging-old")                           # from before leases
    empty = folder(tmp_path, ".staging-empty", files=())             # a store still listing it
    (tmp_path / "v-0123456789abcdef").mkdir()
    (tmp_path / "v-0123456789abcdef" / "shard").write_bytes(b"x")    # never committed
    found = staging.find(Storage(), str(tmp_path), now=now)
    assert sorted(found.dead) == sorted([dead, empty])
    assert found.live == [live] and found.unknown == [old]


def test_an_uncommitted_version_goes_only_when_no_run_is_alive(tmp_path):
    now = time.time()
    version = tmp_path / "v-0123456789abcdef"
    version.mkdir()
    (version / "shard").write_bytes(b"x")
    folder(tmp_path, ".staging-dead", expires=now - 1)
    found = staging.find(Storage(), str(tmp_path), now=now)
    assert str(version) in found.dead
    staging.remove(Storage(), found)
    assert not version.exists() and not (tmp_path / ".staging-dead").exists()


def test_a_lease_is_held_while_the_run_runs_and_gone_after(tmp_path):
    lease_file = tmp_path / ".staging-run" / "LEASE.json"
    with staging.Lease(Storage(), str(tmp_path / ".staging-run"), seconds=0.4):
        first = json.loads(lease_file.read_text())["expires"]
        time.sleep(0.35)                                       # renewed every seconds / 4
        assert json.loads(lease_file.read_text())["expires"] > first
        assert staging.find(Storage(), str(tmp_path)).live == [str(tmp_path / ".staging-run")]
    assert not os.path.exists(lease_file)
