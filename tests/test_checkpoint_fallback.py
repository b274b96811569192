"""Checkpoints committed in the right order and restored only when intact, against the real S3
server: the marker lists exactly the bytes that were uploaded; a damaged newest checkpoint (a
file corrupted or missing in the store) is named in one line and the previous committed one is
used; a real horovodrun -np 2 relaunch resumes from it and says so."""
import hashlib
import json
import re

import pytest
import tensorflow as tf

from pipeline.dataset.storage import join
from tests.conftest import run_cli
from tests.test_trainer_faults import horovod
from trainer.state.checkpoints import MARKER, CheckpointStore, latest_position


def stored_sha256(storage, url: str) -> str:
    return hashlib.sha256(storage.read_bytes(url)).hexdigest()


def damage(storage, checkpoint_url: str, how: str) -> str:
    """Corrupt (flip bytes of) the data file, or delete the index file, of one checkpoint."""
    files = [f["name"] for f in json.loads(storage.read_text(join(checkpoint_url, MARKER)))["files"]]
    name = next(f for f in files if ("data" if how == "corrupt" else "index") in f)
    if how == "corrupt":
        data = bytearray(storage.read_bytes(join(checkpoint_url, name)))
        data[len(data) // 2] ^= 0xFF
        storage.write_bytes(join(checkpoint_url, name), bytes(data))
    else:
        storage.delete(join(checkpoint_url, name))
    return name


def test_marker_lists_what_was_uploaded_and_restore_falls_back(storage, tmp_path):
    storage.ensure_bucket("s3://ckpt-units")
    store = CheckpointStore(storage, "s3://ckpt-units/run", str(tmp_path / "local"), keep=3)
    weights = tf.Variable([0.0, 0.0])
    for step in (1, 2, 3):
        weights.assign([float(step), -float(step)])
        store.save(tf.train.Checkpoint(w=weights), step, {"epoch": step, "batch": 0})
    for step in store.committed():
        marker = store.marker(step)
        url = join(store.url, store.name(step))
        stored = {u.rsplit("/", 1)[-1] for u, _ in storage.list(url)} - {MARKER}
        assert stored == {f["name"] for f in marker["files"]}
        assert all(stored_sha256(storage, join(url, f["name"])) == f["sha256"] for f in marker["files"])

    corrupted = damage(storage, join(store.url, store.name(3)), "corrupt")
    said = []
    latest = latest_position(store, say=lambda line, **_: said.append(line))
    assert latest["step"] == 2 and latest["epoch"] == 2
    assert said == [f"checkpoint s3://ckpt-units/run/ckpt-00000003 is damaged ({corrupted} does not "
                    "match its sha256 in the COMMITTED marker); falling back to the previous "
                    "committed checkpoint"]
    with pytest.raises(IOError, match="ckpt-00000003 is damaged"):
        store.restore(tf.train.Checkpoint(w=weights), 3, rank=1)
    store.restore(tf.train.Checkpoint(w=weights), latest["step"], rank=1)
    assert weights.numpy().tolist() == [2.0, -2.0]

    for step in (1, 2):
        damage(storage, join(store.url, store.name(step)), "delete")
    with pytest.raises(IOError, match="every committed checkpoint in s3://ckpt-units/run is damaged"):
        latest_position(store, say=lambda *a, **k: None)


@pytest.mark.slow        # minutes of end-to-end training: `make test-all` runs it (README)
def test_relaunch_after_damage_resumes_from_the_previous_committed_checkpoint(dataset, storage, tmp_path):
    checkpoints = "s3://fmnist/runs/damaged-newest"
    first = run_cli(horovod(dataset, checkpoints, tmp_path / "a", 3), timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    store = CheckpointStore(storage, checkpoints, str(tmp_path / "check"))
    oldest, middle, newest = store.committed()               # one per epoch, the newest 3 kept
    corrupted = damage(storage, join(checkpoints, store.name(newest)), "corrupt")
    deleted = damage(storage, join(checkpoints, store.name(middle)), "delete")

    resumed = run_cli(horovod(dataset, checkpoints, tmp_path / "b", 4), timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    out = resumed.stdout
    assert (f"checkpoint {checkpoints}/{store.name(newest)} is damaged ({corrupted} does not match "
            "its sha256 in the COMMITTED marker); falling back to the previous committed checkpoint") in out
    assert (f"checkpoint {checkpoints}/{store.name(middle)} is damaged ({deleted} is missing); "
            "falling back to the previous committed checkpoint") in out
    assert re.search(rf"resumed from {checkpoints}/{store.name(oldest)}: epoch 2, 0 of \d+ batches done", out), out[-3000:]
    report = json.loads(storage.read_text(join(checkpoints, "report.json")))
    assert report["resumed_from"]["step"] == oldest and len(report["history"]) == 3    # epochs 2-4
    assert all(store.damage(step) is None for step in store.committed())        # rewritten whole
