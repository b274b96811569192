"""A trainer that read version 1's manifest finishes on version 1 while version 2 is published
over it with --overwrite: real horovodrun -np 2, the real Beam job, the real S3 server. The
job's publish test hook holds version 2 just before its commit until the trainer has read the
manifest, then lets it commit, so the trainer fetches its shards after the switch."""
import glob
import json
import os
import subprocess
import threading
import time

import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import join
from tests.conftest import ROOT
from tests.test_publish_versions import ingest, ingest_command, kill, paused_job


def test_a_trainer_on_version_1_finishes_while_version_2_is_published(storage, fmnist, tmp_path):
    output, checkpoints = "s3://readers/datasets/fm", "s3://readers/runs/during-publish"
    storage.ensure_bucket(output)
    ingest(fmnist["images"], output, "--labels_file", fmnist["labels"], "--splits",
           "train:0.8,validation:0.2")
    v1 = read_manifest(storage, output)

    resume = tmp_path / "resume"
    v2_job = paused_job(ingest_command(fmnist["images"], output, "--labels_file", fmnist["labels"],
                                       "--splits", "train:0.8,validation:0.2", "--overwrite",
                                       "--num_shards", "4"),
                        "committing", env={"PIPELINE_TEST_RESUME_FILE": str(resume)})
    cache = tmp_path / "cache"
    trainer = subprocess.Popen(
        ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-u", "-m", "trainer",
         "--dataset", output, "--checkpoint-dir", checkpoints, "--epochs", "1", "--batch-size", "8",
         "--warmup-epochs", "0", "--cache-dir", str(cache), "--no-tensorboard"],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(trainer.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while not any("training cnn on" in line for line in lines):   # rank 0 has read the manifest
            assert trainer.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.05)
        resume.touch()                                                  # version 2 commits now
        assert v2_job.wait(timeout=120) == 0
        committed = time.time()
        v2 = read_manifest(storage, output)
        assert v2.version != v1.version
        assert trainer.wait(timeout=600) == 0, "".join(lines)[-4000:]
    finally:
        for process in (v2_job, trainer):
            if process.poll() is None:
                kill(process)
    report = json.loads(storage.read_text(join(checkpoints, "report.json")))
    assert report["test"]["examples"] == v1.splits["test"].num_records
    staged = glob.glob(str(cache / "**" / "*.tfrecord-*"), recursive=True)
    v1_files = {s.sha256[:16] for split in v1.splits.values() for s in split.shards}
    assert staged and all(os.path.basename(p).split("-")[0] in v1_files for p in staged), staged   # v1's
    # ... fetched after version 2 was live: an in-place overwrite would have failed them.
    print(f"trainer staged its shards {min(os.path.getmtime(p) for p in staged) - committed:+.1f} s "
          "after version 2 was committed")
    assert min(os.path.getmtime(p) for p in staged) > committed - 1.0


def test_load_of_every_split_reads_the_version_it_was_given_while_another_is_published(storage, fmnist, tmp_path):
    """Three load() calls of one version, with version 2 committed between them: every split
    comes from version 1 (its record counts differ from version 2's in every split)."""
    from pipeline.dataset.load import current_version, load
    from pipeline.dataset.manifest import DatasetNotFound

    output = "s3://readers/datasets/pinned"
    storage.ensure_bucket(output)
    ingest(fmnist["images"], output, "--labels_file", fmnist["labels"], "--splits", "train:0.8,validation:0.2")
    v1 = read_manifest(storage, output)
    version = current_version(output)
    assert version == v1.version
    counts = {}
    for split in ("train", "validation", "test"):
        if split == "validation":           # version 2 goes live between the loads
            ingest(fmnist["images"], output, "--labels_file", fmnist["labels"], "--splits",
                   "train:0.4,validation:0.6", "--overwrite")
        counts[split] = sum(1 for _ in load(output, split, version=version, cache_dir=str(tmp_path / split)))
    v2 = read_manifest(storage, output)
    assert v2.version != version
    assert counts == {split: v1.splits[split].num_records for split in counts}
    assert counts["train"] != v2.splits["train"].num_records           # so a mix would show
    assert sum(1 for _ in load(output, "train", cache_dir=str(tmp_path / "now"))) == v2.splits["train"].num_records
    for bad, message in (("../../etc", "is not a dataset version"), ("v-0000000000000000", "--keep_versions")):
        with pytest.raises(DatasetNotFound, match=message):
            load(output, "train", version=bad)
