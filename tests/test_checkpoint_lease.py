"""Two trainers, one --checkpoint-dir (issue 26, item 12): rank 0 leases the folder in the real S3
server, a second run is refused in one line while the first lives and takes over at once when the
first was killed on this host; a resume onto another version of the dataset is named and refused
unless --resume-other-version."""
import os
import stat
import subprocess
import sys

import pytest

from benchmarks.trainer_dataset import build
from tests.conftest import ROOT, run_cli


def trainer(dataset, checkpoints, cache, *extra) -> list[str]:
    return ["trainer", "--dataset", dataset, "--checkpoint-dir", checkpoints, "--cache-dir", str(cache),
            "--batch-size", "16", "--no-tensorboard", "--precise-bn", "0", "--log-every", "1", *extra]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("lease") / "fmnist")
    build(out, train=128, test=32, shards=1)
    return out


def wait_for(process: subprocess.Popen, words: str, lines: list[str]) -> None:
    for line in process.stdout:
        lines.append(line)
        if words in line:
            return
    raise AssertionError("".join(lines)[-3000:])


def test_a_second_run_is_refused_while_the_first_lives_and_takes_over_once_it_is_killed(
        storage, small_dataset, tmp_path):
    checkpoints = "s3://leases/runs/shared"
    storage.ensure_bucket(checkpoints)
    first = subprocess.Popen([sys.executable, "-m", *trainer(small_dataset, checkpoints, tmp_path / "a",
                                                             "--epochs", "200")],
                             cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        wait_for(first, "training cnn on", lines)
        second = run_cli(trainer(small_dataset, checkpoints, tmp_path / "b", "--epochs", "1"), timeout=300)
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert second.stderr.strip().splitlines()[-1].startswith(
            f"trainer: error: another training run holds {checkpoints}/LOCK: run "), second.stderr[-2000:]
        assert f"pid {first.pid})" in second.stderr and "use another --checkpoint-dir" in second.stderr
        assert first.poll() is None                          # the first trains on, untouched
        rank_folder = next((tmp_path / "a" / "jobs").iterdir()) / "rank-0"
        assert stat.S_IMODE(os.stat(rank_folder).st_mode) == 0o700        # item 13: private
    finally:
        first.kill()
        first.wait()
    # Killed on this host: its lease is stale at once (its process is gone), no waiting it out.
    third = run_cli(trainer(small_dataset, checkpoints, tmp_path / "c", "--epochs", "1",
                            "--check-input", "only"), timeout=300)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert "trainer: took over the stale lock of run" in third.stdout
    assert "(its process is gone)" in third.stdout


def test_a_resume_onto_another_dataset_version_is_refused_unless_asked(storage, tmp_path):
    dataset = str(tmp_path / "fmnist")
    build(dataset, train=64, test=16, shards=1)
    checkpoints = str(tmp_path / "run")
    first = run_cli(trainer(dataset, checkpoints, tmp_path / "cache", "--epochs", "1"), timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]

    build(dataset, train=96, test=16, shards=1)          # republished in place: other records
    refused = run_cli(trainer(dataset, checkpoints, tmp_path / "cache", "--epochs", "2"), timeout=300)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert "was trained on dataset version sha256:" in line and f"--dataset {dataset} is version sha256:" in line
    assert "pass --resume-other-version" in line and "resumed from" not in refused.stdout

    asked = run_cli(trainer(dataset, checkpoints, tmp_path / "cache", "--epochs", "2",
                            "--resume-other-version", "--check-input", "only"), timeout=300)
    assert asked.returncode == 0, asked.stdout[-2000:] + asked.stderr[-2000:]
    assert "going on from it (--resume-other-version)" in asked.stdout
