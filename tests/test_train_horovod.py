"""A real `horovodrun -np 2` (Gloo) on a dataset published by the real Beam job, checkpoints in
the real S3 server; then a real kill -9 of the whole run and a relaunch that resumes."""
import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, run_cli


def horovod_cmd(dataset, checkpoints, epochs, cache_dir):
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", str(epochs),
            "--batch-size", "16", "--lr", "0.02", "--warmup-epochs", "0.5",
            "--cache-dir", str(cache_dir), "--log-every", "1"]


def trainer_processes(checkpoints: str) -> list[int]:
    """Live processes whose command line names this checkpoint dir (ranks of a run)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if checkpoints.encode() in f.read():
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return pids


def digests(output: str) -> dict:
    return dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]+)", output))


def committed_epochs(storage, checkpoints: str) -> list[int]:
    """Epochs done at each committed checkpoint (from the markers)."""
    return sorted(json.loads(storage.read_text(u))["epoch"] for u, _ in storage.list(checkpoints)
                  if u.endswith("/COMMITTED") and "/ckpt-" in u)


def test_two_ranks_train_identically_checkpoint_to_s3_and_resume(dataset, storage, tmp_path):
    checkpoints = "s3://fmnist/runs/two-ranks"
    first = run_cli(horovod_cmd(dataset, checkpoints, 2, tmp_path))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    ranks = digests(first.stdout)
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"], first.stdout[-2000:]

    report = json.loads(storage.read_text(f"{checkpoints}/report.json"))
    losses = [epoch["loss"] for epoch in report["history"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    samples = report["samples"]                # per step (sampled): the curves' loss and LR
    at = [s["epoch"] for s in samples]
    assert at == sorted(at) and at[-1] == 2 and any(0 < e < 1 for e in at), at
    lrs = [s["lr"] for s in samples]               # per step: the decay's shape, not one point
    after = lrs[lrs.index(max(lrs)):]              # per epoch (3 steps here: warm-up is 1 step)
    assert after == sorted(after, reverse=True) and len(set(after)) > 2 and after[-1] < after[0], lrs
    assert "training_curves" in report["plots"]
    assert report["world_size"] == 2 and report["test"]["examples"] == 150
    steps = report["steps_per_epoch"]
    assert storage.exists(f"{checkpoints}/ckpt-{2 * steps:08d}/COMMITTED")
    assert storage.exists(f"{checkpoints}/model/COMMITTED")

    again = run_cli(horovod_cmd(dataset, checkpoints, 3, tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {checkpoints}/ckpt-{2 * steps:08d}: epoch 3, 0 of {steps} batches done" in again.stdout
    assert "epoch 3/3" in again.stdout and "epoch 1/3" not in again.stdout
    resumed_from = json.loads(storage.read_text(f"{checkpoints}/report.json"))["resumed_from"]
    assert (resumed_from["epoch"], resumed_from["batch"], resumed_from["step"]) == (2, 0, 2 * steps)


def test_killed_run_resumes_from_its_last_complete_checkpoint(dataset, storage, tmp_path):
    checkpoints = "s3://fmnist/runs/killed"
    run = subprocess.Popen(horovod_cmd(dataset, checkpoints, 30, tmp_path), cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not committed_epochs(storage, checkpoints) or committed_epochs(storage, checkpoints)[-1] < 2:
        assert run.poll() is None, run.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.5)
    os.killpg(run.pid, signal.SIGKILL)          # horovodrun, mid-training, no clean-up
    run.wait()
    deadline = time.monotonic() + 60            # its ranks must not outlive it
    while trainer_processes(checkpoints):
        assert time.monotonic() < deadline, f"ranks still running: {trainer_processes(checkpoints)}"
        time.sleep(0.5)

    done = committed_epochs(storage, checkpoints)
    assert done and done[-1] >= 2
    resumed = run_cli(horovod_cmd(dataset, checkpoints, done[-1] + 1, tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epoch {done[-1] + 1}, 0 of" in resumed.stdout
    assert f"epoch {done[-1] + 1}/{done[-1] + 1}" in resumed.stdout
    assert digests(resumed.stdout)["0"] == digests(resumed.stdout)["1"]
