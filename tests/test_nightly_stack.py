"""`python -m infra.local.stack up|status|env|down`: the local stack a developer starts by hand (and
the nightly demo reuses), driven as a person would, from separate commands."""
from __future__ import annotations

import boto3

from infra.local.s3server import free_port
from tests.conftest import run_cli


def stack(state_dir, *args):
    return run_cli(["infra.local.stack", "--state-dir", str(state_dir), *args], timeout=180)


def test_stack_up_status_env_down(tmp_path):
    port = free_port()
    up = stack(tmp_path, "up", "--s3-port", str(port))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"S3 at http://127.0.0.1:{port}" in up.stdout
        assert "already up" in stack(tmp_path, "up", "--s3-port", str(port)).stdout

        status = stack(tmp_path, "status")
        assert status.returncode == 0 and "answering" in status.stdout

        exports = dict(line[len("export "):].split("=", 1) for line in stack(tmp_path, "env").stdout.splitlines())
        assert exports["AWS_ENDPOINT_URL_S3"] == f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=exports["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                          aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"])
        s3.create_bucket(Bucket="by-hand")                  # the server outlived the `up` command
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["by-hand"]
    finally:
        down = stack(tmp_path, "down")
    assert down.returncode == 0 and "down (pid" in down.stdout
    after = stack(tmp_path, "status")
    assert after.returncode == 3 and "not running" in after.stdout
    assert stack(tmp_path, "env").returncode == 3


def test_stack_with_cassandra(tmp_path):
    from cassandra.cluster import Cluster
    from infra.local.cassandra import PROTOCOL_VERSION

    up = stack(tmp_path, "up", "--s3-port", str(free_port()))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        exports = dict(line[len("export "):].split("=", 1) for line in stack(tmp_path, "env").stdout.splitlines())
        cluster = Cluster([exports["CASSANDRA_HOSTS"]], port=int(exports["CASSANDRA_PORT"]),
                          protocol_version=PROTOCOL_VERSION)
        try:
            assert cluster.connect().execute("SELECT release_version FROM system.local").one()
        finally:
            cluster.shutdown()
    finally:
        assert stack(tmp_path, "down").returncode == 0


def test_a_local_server_dies_with_the_process_that_started_it():
    """kill -9 of a test run or demo must not leave its S3 server behind (setpriv --pdeathsig)."""
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    starter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from infra.local.s3server import LocalS3\n"
                               "print(LocalS3().start().process.pid, flush=True); time.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server_pid = int(starter.stdout.readline())
    os.kill(server_pid, 0)                                   # the server runs
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{server_pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":   # dead, waiting for init to reap it
                    return
        except FileNotFoundError:
            return
        time.sleep(0.2)
    os.kill(server_pid, 9)
    raise AssertionError(f"the S3 server (pid {server_pid}) outlived the process that started it")
