"""The local S3 server with a data directory: objects and credentials outlive a restart (a kill -9
too: tests/test_object_store.py), without one nothing is left behind; `infra.stack up` keeps them
across `down`; the demo finds a complete upload and reuses it. Real SeaweedFS servers over HTTP on
loopback."""
import os
import subprocess
import sys
import time

from infra.local import fashion_mnist
from infra.local.processes import alive
from infra.local.s3server import LocalS3
from tests.conftest import IMAGES_PER_SPLIT, ROOT, run_cli


def objects(client, bucket: str) -> dict:
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_objects_and_credentials_outlive_a_clean_stop(tmp_path):
    data = tmp_path / "s3-data"
    written = {f"a/{i}.bin": os.urandom(1000 + i) for i in range(50)}
    with LocalS3(data_dir=str(data)) as server:
        first = server.credentials
        client = server.client()
        client.create_bucket(Bucket="kept")
        for key, body in written.items():
            client.put_object(Bucket="kept", Key=key, Body=body)
    with LocalS3(data_dir=str(data)) as server:              # a new process, other ports
        assert server.credentials == first                  # a shell's exports still work
        assert objects(server.client(), "kept") == written
    assert oct(os.stat(data / "s3-identity.json").st_mode & 0o777) == "0o600"


def test_without_a_data_dir_nothing_is_left_behind():
    server = LocalS3().start()
    run_dir = server.run_dir
    server.client().create_bucket(Bucket="gone")
    server.stop()
    assert not os.path.exists(run_dir)                      # its data and identity were in there


def test_what_a_killed_starter_left_is_removed_by_the_next_start():
    """kill -9 of a test run leaves its server's run directory (the data too, without a data
    directory); the server died with it; the next server started anywhere removes it."""
    starter = subprocess.Popen(
        [sys.executable, "-c", "import time; from infra.local.s3server import LocalS3\n"
                               "print(LocalS3().start().run_dir, flush=True); time.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    run_dir = starter.stdout.readline().strip()
    with open(os.path.join(run_dir, "server.pid")) as f:
        server = int(f.read())
    starter.kill()
    starter.wait()
    deadline = time.monotonic() + 15
    while alive(server) and time.monotonic() < deadline:     # it stops on its parent's death
        time.sleep(0.2)
    with LocalS3():
        assert not os.path.exists(run_dir)


def test_the_stack_keeps_its_buckets_and_credentials_across_down_and_up(tmp_path):
    import boto3

    state = str(tmp_path / "stack")
    port = str(LocalS3().port)                                 # a free port

    def stack(*command):
        result = run_cli(["infra.stack", "--state-dir", state, *command], timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def client():
        exports = dict(line[len("export "):].split("=", 1) for line in stack("env").splitlines())
        return boto3.client("s3", endpoint_url=exports["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"])

    assert "buckets in" in stack("up", "--no-cassandra", "--s3-port", port)
    try:
        before = client()
        assert oct(os.stat(os.path.join(state, "stack.json")).st_mode & 0o777) == "0o600"
        before.create_bucket(Bucket="nightly")
        before.put_object(Bucket="nightly", Key="raw/labels.csv", Body=b"key,label\n")
        stack("down")
        stack("up", "--no-cassandra", "--s3-port", port)
        # The same exports as before the restart still work.
        assert before.get_object(Bucket="nightly", Key="raw/labels.csv")["Body"].read() == b"key,label\n"
    finally:
        stack("down")


def test_the_demo_reuses_only_a_complete_upload_of_the_same_size(storage, fmnist):
    root = fmnist["images"].rsplit("/", 1)[0]
    assert fashion_mnist.uploaded(storage, root, IMAGES_PER_SPLIT) == fmnist
    assert fashion_mnist.uploaded(storage, root, IMAGES_PER_SPLIT - 1) is None      # another size
    assert fashion_mnist.uploaded(storage, "s3://fmnist/never-uploaded", 10) is None
