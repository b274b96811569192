"""Faults caused for real under horovodrun -np 2 (Gloo): a loss that becomes NaN, and kill -9 of
ONE rank mid-epoch. Neither may hang; the killed run resumes and ends where an uninterrupted run
of the same seed ends, within tolerance."""
import json
import os
import re
import signal
import subprocess
import threading
import time

from tests.conftest import ROOT, run_cli


def horovod(dataset, checkpoints, cache, epochs, *extra):
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-u", "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", str(epochs),
            "--batch-size", "8", "--lr", "0.02", "--warmup-epochs", "0.5", "--cache-dir", str(cache),
            "--no-tensorboard", *extra]


def rank_pid(checkpoints: str, rank: int) -> int | None:
    """The live trainer process of this run that horovodrun started as the given rank."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if checkpoints.encode() in cmdline and b"trainer" in cmdline and \
                f"HOROVOD_RANK={rank}".encode() in environ and b"horovodrun" not in cmdline:
            return int(entry)
    return None


def test_nan_loss_stops_at_once_with_a_diagnosis(dataset, tmp_path):
    started = time.monotonic()
    result = run_cli(horovod(dataset, str(tmp_path / "run"), tmp_path, 20, "--lr", "1e12",
                             "--warmup-epochs", "0"), timeout=300)
    assert result.returncode != 0
    diagnosis = re.search(r"trainer: error: loss became nan on rank \d at epoch 1 step (\d+) .*"
                          r"learning rate ([0-9.e+]+); last finite loss", result.stdout + result.stderr)
    assert diagnosis, result.stdout[-2000:] + result.stderr[-2000:]
    assert "epoch 2/20" not in result.stdout and "Traceback" not in result.stdout
    assert not os.path.exists(tmp_path / "run" / "ckpt-00001")      # nothing NaN was committed
    assert time.monotonic() - started < 240


def test_kill_one_rank_ends_the_job_and_the_relaunch_resumes(dataset, storage, tmp_path):
    checkpoints, epochs = "s3://fmnist/runs/one-rank-killed", 4
    run = subprocess.Popen(horovod(dataset, checkpoints, tmp_path / "a", epochs, "--log-every", "0.05"),
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not storage.exists(f"{checkpoints}/ckpt-00001/COMMITTED"):   # uploaded in the background
        assert run.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.05)
    seen = len(lines)
    while not any(re.search(r"epoch [23]/4 step \d+/", line) for line in lines[seen:]):   # mid-epoch
        assert run.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.05)
    victim = rank_pid(checkpoints, 1)
    assert victim, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    try:
        run.wait(timeout=120)                    # the survivor must not hang on its allreduce
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        raise AssertionError("horovodrun still running 120 s after one rank was killed")
    reader.join(10)
    output = "".join(lines)
    assert run.returncode != 0
    assert "Terminating remaining workers after failure of Process 1" in output, output[-3000:]
    assert rank_pid(checkpoints, 0) is None

    resumed = run_cli(horovod(dataset, checkpoints, tmp_path / "a", epochs), timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {checkpoints}/ckpt-0000" in resumed.stdout
    assert "epoch 1/4" not in resumed.stdout

    whole = run_cli(horovod(dataset, "s3://fmnist/runs/not-killed", tmp_path / "b", epochs), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    a = json.loads(storage.read_text(f"{checkpoints}/report.json"))
    b = json.loads(storage.read_text("s3://fmnist/runs/not-killed/report.json"))
    # Same seed, but the input order after a resume differs (resume is at epoch boundaries) and
    # reads are interleaved non-deterministically, so agreement is within a tolerance. Compared:
    # the last epoch's training loss and accuracy (means over its steps). Test accuracy after
    # these 60 steps is not compared: it hangs on batch-norm moving averages still far from
    # converged (momentum 0.99) and swung between 0.11 and 0.32 across identical runs here.
    # Measured pairs (resumed vs uninterrupted last-epoch loss, 7 steps each): 1.95 vs 1.93,
    # 2.45 vs 1.93, 2.30 vs 1.97; hence 35 %. The resumed run came out higher in the last two;
    # whether that is more than the different input order is an open question (see README).
    last_a, last_b = a["history"][-1], b["history"][-1]
    print("last epoch resumed", last_a, "uninterrupted", last_b)
    assert abs(last_a["loss"] - last_b["loss"]) <= 0.35 * last_b["loss"]
    assert abs(last_a["accuracy"] - last_b["accuracy"]) <= 0.12
