"""No secret on a command line: any local user reads every process's command line (ps,
/proc/<pid>/cmdline). horovodrun's Gloo launcher wrote each variable's value into every rank's
`sh -c "env K=V ... python"`; our Horovod patch (infra/setup/horovod-0.28.1.patch, change 3)
passes secrets through the environment instead. The nightly's whole run is watched the same way
in tests/test_nightly.py."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

SENTINEL = "SENTINEL-not-a-real-secret-7f3a"
# The rank compares a hash, so its own command line does not hold the value it looks for.
# One string per print: mpirun's --tag-output splits a line written in pieces.
RANK = ("import hashlib, os, time; print('rank has ' + str(hashlib.sha256(os.environ.get('{name}', '')"
        ".encode()).hexdigest() == '{digest}'), flush=True); time.sleep(6)")


def exposed(secret: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if secret in cmdline:
                found.append(cmdline.replace(secret, "<SECRET>")[:200])
    return found


@pytest.mark.parametrize("controller", ["--gloo", "--mpi"])
@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "CASSANDRA_PASSWORD"])
def test_horovodrun_keeps_secrets_off_every_command_line(controller, name):
    code = RANK.format(name=name, digest=hashlib.sha256(SENTINEL.encode()).hexdigest())
    run = subprocess.Popen(["horovodrun", "-np", "2", "-H", "localhost:2", controller,
                            sys.executable, "-c", code],
                           cwd=ROOT, env={**os.environ, name: SENTINEL}, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, deadline = [], time.monotonic() + 60
    while run.poll() is None and time.monotonic() < deadline:
        seen += exposed(SENTINEL)
        time.sleep(0.2)
    output = run.communicate(timeout=60)[0]
    assert run.returncode == 0, output[-2000:]
    assert output.count("rank has True") == 2, output[-2000:]     # both ranks got the value
    assert seen == []
