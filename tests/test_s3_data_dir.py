"""The local S3 server with a data directory (issue 16): buckets outlive a restart, a clean stop
and a kill -9 after writes paused alike; `infra.stack up` keeps them across `down`; the demo
finds a complete upload and reuses it. Real moto servers over HTTP on loopback (the session's `s3` fixture puts the dummy credentials
in the environment)."""
import os
import signal
import time

from infra.local import fashion_mnist, s3persist
from infra.local.s3server import LocalS3
from pipeline.dataset.storage import Storage
from tests.conftest import IMAGES_PER_SPLIT, run_cli


def objects(server) -> dict:
    storage = Storage(endpoint_url=server.endpoint_url)
    return {url: storage.read_bytes(url) for url, _ in storage.list("s3://kept/")}


def test_buckets_outlive_a_clean_stop_and_a_kill_after_writes_paused(tmp_path, s3):
    data = tmp_path / "s3-data"
    written = {f"s3://kept/a/{i}.bin": os.urandom(1000 + i) for i in range(50)}
    with LocalS3(data_dir=str(data)) as server:
        storage = Storage(endpoint_url=server.endpoint_url)
        storage.ensure_bucket("s3://kept")
        for url, body in written.items():
            storage.write_bytes(url, body)
    with LocalS3(data_dir=str(data)) as server:              # a new process, another port
        assert objects(server) == written
        storage = Storage(endpoint_url=server.endpoint_url)
        storage.write_bytes("s3://kept/b/late.bin", b"late")
        storage.delete("s3://kept/a/0.bin")
        time.sleep(s3persist.QUIET + 1.5)                   # writes paused: a snapshot is taken
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    with LocalS3(data_dir=str(data)) as server:
        kept = objects(server)
    expected = {**{u: b for u, b in written.items() if u != "s3://kept/a/0.bin"}, "s3://kept/b/late.bin": b"late"}
    assert kept == expected
    assert not os.path.exists(data / f"{s3persist.SNAPSHOT}.tmp")


def test_the_stack_keeps_its_buckets_across_down_and_up(tmp_path, s3):
    state = str(tmp_path / "stack")
    port = str(LocalS3().port)                                 # a free port

    def stack(*command):
        result = run_cli(["infra.stack", "--state-dir", state, *command], timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "buckets in" in stack("up", "--no-cassandra", "--s3-port", port)
    storage = Storage(endpoint_url=f"http://127.0.0.1:{port}")
    try:
        storage.ensure_bucket("s3://nightly")
        storage.write_text("s3://nightly/raw/labels.csv", "key,label\n")
        stack("down")
        stack("up", "--no-cassandra", "--s3-port", port)
        assert storage.read_text("s3://nightly/raw/labels.csv") == "key,label\n"
    finally:
        stack("down")


def test_the_demo_reuses_only_a_complete_upload_of_the_same_size(storage, fmnist):
    root = fmnist["images"].rsplit("/", 1)[0]
    assert fashion_mnist.uploaded(storage, root, IMAGES_PER_SPLIT) == fmnist
    assert fashion_mnist.uploaded(storage, root, IMAGES_PER_SPLIT - 1) is None      # another size
    assert fashion_mnist.uploaded(storage, "s3://fmnist/never-uploaded", 10) is None

