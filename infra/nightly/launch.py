"""The nightly's training step, two ways: horovodrun on this machine, or an MPIJob in Kubernetes.

Both run the same `python -m trainer` flags; only the process launcher differs.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request

import yaml

from infra.nightly import supervise
from infra.output import run_shown

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
MPIJOBS = "/apis/kubeflow.org/v2beta1/namespaces/{namespace}/mpijobs"
# Open MPI over the operator's ssh; -x hands the launcher's variables to the ranks, which sshd
# starts with a bare environment (S3 credentials and endpoint included).
# XDG_CACHE_HOME: the trainer's per-user cache goes to the pod's /tmp volume, not its image layer.
MPI_FLAGS = ["-bind-to", "none", "-map-by", "slot", "-x", "NCCL_DEBUG=WARN", "-x", "LD_LIBRARY_PATH",
             "-x", "PATH", "-x", "AWS_ACCESS_KEY_ID", "-x", "AWS_SECRET_ACCESS_KEY",
             "-x", "AWS_DEFAULT_REGION", "-x", "AWS_ENDPOINT_URL_S3", "-x", "XDG_CACHE_HOME=/tmp/cache",
             "-mca", "pml", "ob1", "-mca", "btl", "^openib"]


class TrainingFailed(Exception):
    """The training step ended without a committed model; the message says how."""


def trainer_flags(span_url: str, version_url: str, train: dict, init_from: str | None) -> list[str]:
    flags = ["--dataset", span_url, "--checkpoint-dir", version_url,
             "--epochs", str(train["epochs"]), "--batch-size", str(train["batch_size"])]
    if init_from:
        flags += ["--init-from", init_from]
    return flags + [str(a) for a in train["args"]]


# -- here: horovodrun ------------------------------------------------------------------------------
def run_local(flags: list[str], processes: int, limit_seconds: float | None = None, log=print) -> None:
    """horovodrun with its MPI controller: mpirun hands the ranks the launcher's variables by
    name (-x), so S3 credentials never appear on a command line (Gloo's launcher writes every
    value into each rank's `sh -c env K=V ...`, readable in ps by any local user)."""
    command = ["horovodrun", "-np", str(processes), "-H", f"localhost:{processes}",
               sys.executable, "-m", "trainer", *flags]
    log(f"nightly: {' '.join(command[:5])} ... python -m trainer {' '.join(flags)}")
    # Its lines without TensorFlow's, horovodrun's and mpirun's banners (trainer --verbose: all).
    code = run_shown(supervise.command_for(command, limit_seconds), verbose="--verbose" in flags)
    if code == supervise.TIMED_OUT:
        raise TrainingFailed(f"horovodrun ran past train.timeout_seconds ({limit_seconds:g} s) and was ended")
    if code != 0:
        raise TrainingFailed(f"horovodrun exited with {code}")


# -- Kubernetes: an MPIJob -----------------------------------------------------------------------
def job_name(model: str, version: str) -> str:
    """A DNS-1123 name, the same for the same night, so a re-run finds the job it created.
    Cut to 52 characters (the operator appends suffixes) with a hash of the full name, so two
    long model names, or `fashion_mnist` and `Fashion-MNIST`, never share a job."""
    full = f"train-{model}-{version}"
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    name = re.sub(r"[^a-z0-9-]+", "-", full.lower()).strip("-")
    return f"{name[:52 - len(digest) - 1].rstrip('-')}-{digest}"


def render_mpijob(template: dict, name: str, namespace: str, flags: list[str]) -> dict:
    """The template's launcher runs mpirun over every worker slot, then `python -m trainer`."""
    job = copy.deepcopy(template)
    job["metadata"] = {**job.get("metadata", {}), "name": name, "namespace": namespace}
    spec = job["spec"]
    workers = spec["mpiReplicaSpecs"]["Worker"].get("replicas", 1)
    processes = workers * spec.get("slotsPerWorker", 1)
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    launcher["command"] = ["mpirun"]
    launcher["args"] = ["-np", str(processes), *MPI_FLAGS, "python", "-m", "trainer", *flags]
    return job


class KubeAPI:
    """The few calls the nightly makes, with the pod's service-account token (in-cluster)."""

    def __init__(self):
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise TrainingFailed("launcher mpijob runs inside Kubernetes (KUBERNETES_SERVICE_HOST is unset)")
        self.base = f"https://{host}:{port}"
        with open(os.path.join(SERVICE_ACCOUNT, "token")) as f:
            self.token = f.read().strip()
        self.context = ssl.create_default_context(cafile=os.path.join(SERVICE_ACCOUNT, "ca.crt"))

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base + path, method=method, data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def conditions(job: dict) -> dict[str, str]:
    return {c["type"]: c.get("status") for c in job.get("status", {}).get("conditions", [])}


def run_mpijob(flags: list[str], model: str, version: str, settings: dict, log=print,
               api: KubeAPI | None = None) -> None:
    with open(settings["template"]) as f:
        template = yaml.safe_load(f)
    name, namespace = job_name(model, version), settings["namespace"]
    job = render_mpijob(template, name, namespace, flags)
    api = api or KubeAPI()
    path = MPIJOBS.format(namespace=namespace)
    status, body = api.call("POST", path, job)
    if status == 409:
        log(f"nightly: MPIJob {namespace}/{name} exists from an earlier try of this night; following it")
    elif status >= 300:
        raise TrainingFailed(f"creating MPIJob {namespace}/{name} failed ({status}): {body.get('message', body)}")
    else:
        log(f"nightly: created MPIJob {namespace}/{name}")
    deadline = time.monotonic() + settings["timeout_seconds"]
    last = None
    while time.monotonic() < deadline:
        status, body = api.call("GET", f"{path}/{name}")
        if status >= 300:
            raise TrainingFailed(f"reading MPIJob {namespace}/{name} failed ({status}): {body.get('message', body)}")
        state = conditions(body)
        if state != last:
            log(f"nightly: MPIJob {name}: " + ", ".join(f"{k}={v}" for k, v in state.items()))
            last = state
        if state.get("Succeeded") == "True":
            return
        if state.get("Failed") == "True":
            raise TrainingFailed(f"MPIJob {namespace}/{name} failed; see `kubectl logs -n {namespace} "
                                 f"-l training.kubeflow.org/job-name={name}`")
        time.sleep(settings["poll_seconds"])
    raise TrainingFailed(f"MPIJob {namespace}/{name} did not finish within {settings['timeout_seconds']} s")
