"""Two real hosts: `horovodrun -np 2 -H hostA:1,hostB:1 --network-interface veth0` across two
network namespaces of this machine (infra/local/hosts.py: a veth pair, an address, a hostname and
sshd each), so rank 1 is started over ssh and every allreduce crosses the veth, as between two
nodes. Gloo and MPI end with identical weights; kill -9 of the trainer on hostB ends the job
(non-zero, in bounded time, nothing left running); in elastic mode hostA goes on alone.

The session's S3 server listens on the root namespace's loopback, which the hosts cannot reach:
the dataset and the checkpoints are local directories, visible on both hosts as a shared
filesystem would be."""
import json
import os
import re
import subprocess
import sys

import pytest

from infra.local import hosts
from tests.conftest import ROOT, run_cli
from tests.helpers import kill_when

# Measured here (docs/two-hosts.md): Gloo ended 0.2 s, MPI 3.2 s after the kill; the bound leaves
# room for a loaded machine, and is far below a hang (Horovod's stall shutdown is off by default).
ENDS_WITHIN = 30


@pytest.fixture(scope="module")
def pair():
    try:
        with hosts.running() as made:
            yield made
    except hosts.NamespacesRefused as refused:
        pytest.skip(f"this kernel does not allow network namespaces: {refused}")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    """256 train, 64 validation and 64 test Fashion-MNIST images in 4 shards, published locally."""
    out = str(tmp_path_factory.mktemp("two-hosts") / "fmnist")
    built = run_cli(["benchmarks.trainer_dataset", out, "--train", "256", "--validation", "64",
                     "--test", "64", "--shards", "4"])
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def horovodrun(*launcher: str) -> list[str]:
    return ["horovodrun", "-np", "2", *launcher, "--network-interface", hosts.INTERFACE,
            "--disable-cache"]          # really check ssh and the hosts each time, no cached answers


def trainer(data: str, checkpoints, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-u", "-m", "trainer", "--dataset", data, "--checkpoint-dir", str(checkpoints),
            "--cache-dir", f"{checkpoints}-cache", "--epochs", str(epochs), "--batch-size", "8",
            "--lr", "0.02", "--warmup-epochs", "0.5", "--no-tensorboard",
            "--threads", "1", *extra]   # each namespace sees both cores; 2 ranks x 1 thread fit them


def digests(output: str) -> dict:
    return dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]+)", output))


def sent_bytes(host) -> int:
    stats = subprocess.run(["ip", "-n", host.namespace, "-j", "-s", "link", "show", hosts.INTERFACE],
                           capture_output=True, text=True, check=True)
    return json.loads(stats.stdout)[0]["stats64"]["tx"]["bytes"]


def trainers(host) -> list[int]:
    """The trainer processes (python -m trainer) running on this host."""
    found = []
    for pid in host.pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]).startswith(b"python") and b"trainer" in argv:
            found.append(pid)
    return found


@pytest.mark.parametrize("controller", ["--gloo", "--mpi"])
def test_two_hosts_train_to_identical_weights(pair, data, tmp_path, controller):
    host_a, host_b = pair
    before = sent_bytes(host_b)
    run = subprocess.run(host_a.command([*horovodrun("-H", "hostA:1,hostB:1", controller),
                                         *trainer(data, tmp_path / "run", 2)]),
                         cwd=ROOT, text=True, capture_output=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "host hostA: 1 rank(s)" in output and "host hostB: 1 rank(s)" in output, output[-3000:]
    ranks = digests(output)
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"], output[-3000:]
    sent = sent_bytes(host_b) - before
    print(f"{controller}: hostB sent {sent / 1e6:.0f} MB over {hosts.INTERFACE}")
    assert sent > 10_000_000        # rank 1's gradients for 32 steps went over the veth
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["world_size"] == 2 and report["test"]["examples"] == 64


def test_hosts_are_removed_even_when_the_block_fails(pair):
    # (`pair` only to be skipped with the others where namespaces are refused; these are apart.)
    with pytest.raises(KeyError):
        with hosts.running(prefix="pytest-failing-") as made:
            inside = [pid for host in made for pid in host.pids()]      # the two sshd
            raise KeyError("the test failed")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert len(inside) == 2 and "pytest-failing-" not in listed
    assert not any(os.path.exists(f"/proc/{pid}") for pid in inside)
    assert not any(os.path.exists(host.etc) for host in made)


def kill_on_host_when(command: list[str], host, ready) -> tuple[int, str, float]:
    """Start `command` (a horovodrun), kill -9 the trainer on `host` as soon as `ready(lines)`,
    wait for the run to end. Returns (exit code, its output, seconds from the kill to the end)."""
    def the_trainer():
        victims = trainers(host)
        assert len(victims) == 1, f"trainers on {host.name}: {victims}"
        return victims[0]

    return kill_when(command, ready, the_trainer, f"the trainer on {host.name}", wait=300)


def training(lines) -> bool:
    return any(re.search(r"epoch 1/\d+ step \d+/", line) for line in lines)


@pytest.mark.parametrize("controller", ["--gloo", "--mpi"])
def test_killing_the_trainer_on_host_b_ends_the_job(pair, data, tmp_path, controller):
    host_a, host_b = pair
    command = host_a.command([*horovodrun("-H", "hostA:1,hostB:1", controller),
                              *trainer(data, tmp_path / "run", 50, "--log-every", "0.2")])
    returncode, output, seconds = kill_on_host_when(command, host_b, training)
    print(f"{controller}: horovodrun ended {seconds:.1f} s after the kill on hostB, exit {returncode}")
    assert returncode != 0, output[-3000:]
    assert seconds < ENDS_WITHIN, output[-3000:]
    assert not trainers(host_a) and not trainers(host_b), "a rank outlived the job"


def test_elastic_run_goes_on_on_host_a_when_host_b_dies(pair, data, tmp_path):
    host_a, host_b = pair
    discovery = tmp_path / "discover_hosts.sh"
    discovery.write_text("#!/bin/sh\necho hostA:1\necho hostB:1\n")
    discovery.chmod(0o755)
    checkpoints, epochs = tmp_path / "run", 4
    command = host_a.command([
        *horovodrun("--min-np", "1", "--max-np", "2", "--host-discovery-script", str(discovery), "--gloo"),
        *trainer(data, checkpoints, epochs, "--global-batch-size", "16", "--commit-every", "2",
                 "--log-every", "0.05")])
    returncode, output, seconds = kill_on_host_when(
        command, host_b, lambda lines: any(re.search(r"epoch 2/4 step \d+/", line) for line in lines))
    print(f"elastic: hostA finished {seconds:.1f} s after the kill on hostB")
    assert returncode == 0, output[-4000:]
    again = re.search(r"rank 0 of 1: training from epoch (\d) batch (\d+)", output)
    assert again, output[-3000:]
    assert (int(again.group(1)), int(again.group(2))) >= (2, 0)      # not from the start
    report = json.loads((checkpoints / "report.json").read_text())
    assert report["elastic"] is True and report["world_size"] == 1
    assert report["global_batch"] == 16                                  # kept when alone
    assert [h["epoch"] for h in report["history"]][-1] == epochs
    assert not trainers(host_b)
