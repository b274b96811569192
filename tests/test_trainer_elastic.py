"""Elastic training for real: horovodrun --min-np 1 --max-np 2 with a host-discovery script (Gloo),
two processes on two host names of this machine. kill -9 of one process mid-run: the other rolls
back to the last in-memory commit, goes on alone and finishes the run."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import ROOT
from tests.helpers import rank_pid


def elastic_run(dataset, checkpoints, cache, discovery, epochs):
    return ["horovodrun", "-np", "2", "--min-np", "1", "--max-np", "2", "--host-discovery-script",
            str(discovery), "--gloo", sys.executable, "-u", "-m", "trainer", "--dataset", dataset,
            "--checkpoint-dir", checkpoints, "--epochs", str(epochs), "--batch-size", "8",
            "--lr", "0.02", "--warmup-epochs", "0.5", "--cache-dir", str(cache), "--no-tensorboard",
            "--global-batch-size", "16", "--commit-every", "2", "--log-every", "0.05"]


def test_a_killed_worker_does_not_stop_elastic_training(dataset, storage, tmp_path):
    # Two "hosts" that are both this machine: Horovod runs local names without ssh, and the
    # failed one is blacklisted alone, so the run goes on with the other.
    discovery = tmp_path / "discover_hosts.sh"
    discovery.write_text("#!/bin/sh\necho localhost:1\necho 127.0.0.1:1\n")
    discovery.chmod(0o755)
    checkpoints, epochs = "s3://fmnist/runs/elastic", 4
    run = subprocess.Popen(elastic_run(dataset, checkpoints, tmp_path / "cache", discovery, epochs),
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not any(re.search(r"epoch 2/4 step \d+/", line) for line in lines):
        assert run.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.05)
    victim = rank_pid(checkpoints, 1)
    assert victim, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    try:
        run.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        raise AssertionError("the elastic run did not finish within 300 s of losing a worker")
    reader.join(10)
    output = "".join(lines)
    assert run.returncode == 0, output[-4000:]
    assert "Process 1 exit with status code 137" in output, output[-3000:]
    again = re.search(r"rank 0 of 1: training from epoch (\d) batch (\d)", output)
    assert again, output[-3000:]
    assert (int(again.group(1)), int(again.group(2))) >= (2, 0)      # not from the start

    report = json.loads(storage.read_text(f"{checkpoints}/report.json"))
    assert report["elastic"] is True and report["world_size"] == 1
    assert report["global_batch"] == 16                                  # kept when alone
    assert [h["epoch"] for h in report["history"]][-1] == epochs
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    assert report["test"]["examples"] == 150
