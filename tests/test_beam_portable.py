"""The ingestion job on Beam's portability framework (issue 25), as on a cluster: the launcher
(`python -m pipeline --runner PortableRunner`) hands the job to Beam's own job service, whose
runner has an SDK worker pool start the workers, outside the launcher's process tree
(infra/local/beam_cluster.py, one cluster for the session). Real parts: the job service with our
two patches, the worker pool, the session's S3 server, the job; hostB is a network namespace
(infra/local/hosts.py), skipped where the kernel refuses them.

- 2 SDK workers publish byte for byte what the DirectRunner published from the same input;
- the worker pool on hostB, the job service, the launcher and the S3 server on hostA: the same;
- kill -9 of an SDK worker (before it connects, and once it has): one line, nothing published,
  and the re-run publishes the same version;
- an unreachable job service is one line within the stated wait; an unreachable worker pool is
  one line with gRPC's details."""
import inspect
import json
import os
import re
import subprocess
import sys
import time

import pytest
from apache_beam.options.pipeline_options import PortableOptions

from infra.local import hosts
from infra.local.beam_cluster import BeamCluster
from infra.local.processes import child_env
from infra.local.s3server import LocalS3, dies_with_parent, free_port
from pipeline import runners
from pipeline.dataset.storage import relative
from pipeline.plan import make_options
from tests.conftest import ROOT, run_cli

# The session cluster's: an SDK worker killed before it connects fails its job after this long.
CONNECT_TIMEOUT = 20
SPLITS = "train:0.8,validation:0.2"           # as the session's `dataset` (DirectRunner) was made


@pytest.fixture(scope="session")
def cluster(s3, tmp_path_factory):
    """The job service and a worker pool on this host; the pool's environment (so every SDK
    worker's) holds the session S3 server's endpoint and credentials (the s3 fixture set them)."""
    with BeamCluster(str(tmp_path_factory.mktemp("beam-cluster")),
                     worker_connect_timeout=CONNECT_TIMEOUT) as started:
        yield started


def ingest(raw: dict, output: str, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(["pipeline", "--source", raw["images"], "--labels_file", raw["labels"],
                    "--classes", raw["classes"], "--output", output, "--num_readers", "2",
                    "--splits", SPLITS, *flags], env=env)      # every output's name is "clean"


def dataset_files(storage, url: str) -> dict:
    """Every object of the dataset at `url` by its key under it, but the publish time."""
    return {relative(u, url): storage.read_bytes(u) for u, _ in storage.list(url)
            if not u.endswith("PUBLISHED.json")}


def worker_starts(cluster) -> int:
    with open(cluster.logs()["worker-pool"]) as f:
        return f.read().count("Starting worker with command")


def lines(result) -> list[str]:
    return [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]


def test_two_sdk_workers_publish_what_the_direct_runner_published(cluster, fmnist, dataset, storage):
    started = worker_starts(cluster)
    # --job_server_timeout 1: only the launcher's wait for the job service; Beam 2.77 also cut
    # the job's state stream after it, and a job longer than it failed (pipeline/runners.py).
    result = ingest(fmnist, "s3://fmnist/portable/clean", *cluster.flags(), "--job_server_timeout", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert worker_starts(cluster) - started == 2       # the patch: Beam's own job service ran one
    portable, direct = dataset_files(storage, "s3://fmnist/portable/clean"), dataset_files(storage, dataset)
    assert portable.keys() == direct.keys() and "manifest.json" in portable
    assert all(portable[key] == direct[key] for key in direct), [k for k in direct if portable[k] != direct[k]]
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for pid in [p.pid for p in cluster.processes.values()]:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert secret.encode() not in f.read()       # the workers' keys: in their environment


def connected(pid: int) -> bool:
    """`pid` holds an established TCP connection (an SDK worker's first: to its runner)."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            sockets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for row in f.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "01" and f"socket:[{fields[9]}]" in sockets:    # 01: ESTABLISHED
                    return True
    return False


def version(storage, url: str) -> str:
    return json.loads(storage.read_text(f"{url}/manifest.json"))["version"]


@pytest.mark.parametrize("when", ["before it connects", "once it has connected"])
def test_kill_9_of_an_sdk_worker_is_one_line_and_nothing_published(cluster, fmnist, dataset, storage, when):
    output = f"s3://fmnist/portable/killed-{when.split()[0]}/clean"
    before = set(cluster.sdk_workers())
    job = subprocess.Popen([sys.executable, "-m", "pipeline", "--source", fmnist["images"],
                            "--labels_file", fmnist["labels"], "--classes", fmnist["classes"],
                            "--output", output, "--num_readers", "2", "--splits", SPLITS,
                            *cluster.flags()],
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        workers = [pid for pid in cluster.sdk_workers() if pid not in before]
        if len(workers) == 2 and (when == "before it connects" or connected(workers[0])):
            break
        assert time.monotonic() < deadline and job.poll() is None, "the job's SDK workers never started"
        time.sleep(0.01)
    os.kill(workers[0], 9)
    killed = time.monotonic()
    out, err = job.communicate(timeout=CONNECT_TIMEOUT + 60)
    ended = time.monotonic() - killed
    failure = [line for line in err.splitlines() if line.startswith("pipeline:")]
    assert job.returncode == 1 and len(failure) == 1, err[-3000:]
    assert re.match(r"pipeline: failed.*: .*(SDK worker|Channel closed)", failure[0]), failure
    assert ended < CONNECT_TIMEOUT + 30, f"the job ended {ended:.0f} s after the kill"
    assert not storage.exists(f"{output}/manifest.json") and not list(storage.list(output))
    print(f"{when}: ended {ended:.1f} s after the kill: {failure[0]}")
    rerun = ingest(fmnist, output, *cluster.flags())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert version(storage, output) == version(storage, dataset)


def test_an_unreachable_job_service_is_one_line_within_the_wait(fmnist):
    port = free_port()                             # nothing listens there
    started = time.monotonic()
    result = ingest(fmnist, "s3://fmnist/portable/no-job-service", "--runner", "PortableRunner",
                    "--job_endpoint", f"localhost:{port}", "--environment_type", "EXTERNAL",
                    "--environment_config", "localhost:1", "--job_server_timeout", "5")
    took = time.monotonic() - started
    assert result.returncode == 2 and lines(result) == [
        f"pipeline: error: --job_endpoint localhost:{port}: no job service answered within 5 s "
        "(--job_server_timeout sets the wait)"], lines(result)
    assert 5 <= took < 5 + 25                      # the wait, plus the command's start and checks


def test_the_wait_for_a_job_service_is_30_s_unless_given():
    argv = ["--runner", "PortableRunner", "--job_endpoint", "localhost:1", "--source", "s3://a/b",
            "--output", "s3://a/c"]
    assert make_options(argv).view_as(PortableOptions).job_server_timeout == runners.JOB_SERVICE_WAIT == 30
    given = make_options(argv + ["--job_server_timeout", "7"]).view_as(PortableOptions).job_server_timeout
    assert given == 7


def test_an_unreachable_worker_pool_is_one_line_with_grpcs_details(cluster, fmnist):
    flags = cluster.flags()
    flags[flags.index("--environment_config") + 1] = f"127.0.0.1:{free_port()}"    # nothing there
    result = ingest(fmnist, "s3://fmnist/portable/no-worker-pool", *flags)
    failure = lines(result)[1:]                    # after the start line
    assert result.returncode == 1 and len(failure) == 1, lines(result)
    assert re.match(r"pipeline: failed: the SDK worker pool \(--environment_config\) did not answer: "
                    r"failed to connect to all addresses.*Connection refused \(gRPC UNAVAILABLE\) "
                    r"\(details: .*\.log\)$", failure[0]), failure


# -- the worker pool on another host ---------------------------------------------------------
@pytest.fixture(scope="module")
def pair():
    if "bind" not in inspect.signature(LocalS3).parameters:
        pytest.skip("the S3 server cannot listen on hostA's address (LocalS3(bind=...)) in this checkout")
    try:
        with hosts.running(prefix="pytest-beam-") as made:
            yield made
    except hosts.NamespacesRefused as refused:
        pytest.skip(f"this kernel does not allow network namespaces: {refused}")


def s3_on(host, env: dict) -> tuple[subprocess.Popen, dict]:
    """The S3 server on `host`'s address (what hostB reaches), started there; its export lines."""
    server = subprocess.Popen(dies_with_parent(host.command(
        [sys.executable, "-m", "infra.local.s3server", "--bind", host.address, "--port", "9000"])),
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    exported, said = {}, []
    while "AWS_ENDPOINT_URL_S3" not in exported:
        line = server.stdout.readline()
        assert line, "the S3 server on hostA ended: " + "".join(said)
        said.append(line)
        if line.strip().startswith("export "):
            key, _, value = line.strip()[len("export "):].partition("=")
            exported[key] = value
    return server, exported


def on(host, argv: list[str], env: dict) -> subprocess.CompletedProcess:
    """`python -m ...` (or -c) run on `host`, the way a user there would."""
    return subprocess.run(host.command([sys.executable, *argv]), cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


DIGESTS = """import hashlib, json, sys
from pipeline.dataset.storage import Storage, relative
s = Storage()
print(json.dumps({url: {relative(u, url): hashlib.sha256(s.read_bytes(u)).hexdigest()
                        for u, _ in s.list(url) if not u.endswith("PUBLISHED.json")} for url in sys.argv[1:]}))"""


def test_worker_pool_on_hostB_data_on_hostA_publishes_what_the_direct_runner_published(pair, tmp_path):
    host_a, host_b = pair
    server, exported = s3_on(host_a, child_env(os.environ))
    env = {**child_env(os.environ), **exported}     # the S3 server's endpoint and identity, on both hosts
    try:
        uploaded = on(host_a, ["-m", "infra.local.fashion_mnist", "s3://hosts/raw", "--limit", "60"], env)
        assert uploaded.returncode == 0, uploaded.stderr[-3000:]
        source = ["--source", "s3://hosts/raw/images", "--labels_file", "s3://hosts/raw/labels.csv",
                  "--classes", "s3://hosts/raw/classes.txt", "--num_readers", "2", "--splits", SPLITS,
                  "--name", "clean"]
        with BeamCluster(str(tmp_path / "cluster"), hosts=[host_a, host_b], env=env,
                         worker_connect_timeout=CONNECT_TIMEOUT) as cluster:
            assert cluster.worker_pools[0].startswith("hostB:")
            portable = on(host_a, ["-m", "pipeline", *source, "--output", "s3://hosts/portable",
                                   *cluster.flags()], env)
            with open(cluster.logs()["worker-pool-hostB"]) as f:
                started_on_b = f.read().count("Starting worker with command")
        assert portable.returncode == 0, portable.stderr[-3000:]
        assert started_on_b == 2                    # both SDK workers ran on hostB
        direct = on(host_a, ["-m", "pipeline", *source, "--output", "s3://hosts/direct"], env)
        assert direct.returncode == 0, direct.stderr[-3000:]
        digests = on(host_a, ["-c", DIGESTS, "s3://hosts/portable", "s3://hosts/direct"], env)
        assert digests.returncode == 0, digests.stderr[-3000:]
        published = json.loads(digests.stdout)
        assert published["s3://hosts/portable"] == published["s3://hosts/direct"]
        assert "manifest.json" in published["s3://hosts/direct"]
    finally:
        server.terminate()
        server.wait(30)
