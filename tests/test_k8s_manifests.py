"""Every manifest in k8s/, and what kustomize renders from the base and the dev overlay, checked
against real schemas:

- Kubernetes kinds: kubernetes-validate's strict JSON schemas (unknown fields are errors) for
  the oldest version we support (native sidecars and CronJob time zones need 1.29+: 1.30).
- MPIJob (kubeflow.org/v2beta1) and FlinkDeployment (flink.apache.org/v1beta1): the
  openAPIV3Schema of the upstream CRDs, vendored in k8s/schemas/ (sources in SOURCES.md), made
  strict the way `kubectl --validate=strict` is (unknown fields are errors); and the pod templates
  inside them against the real Kubernetes PodTemplateSpec / Pod schemas.
- Rendering uses the real kustomize (v5, built into kubectl).
Then the policies the issue asks for: non-root, requests and limits, credentials only from
Secrets, the RBAC the nightly needs and no more, and every name a pod refers to exists. Network
policies, the MPIJob admission policy and ssh host keys: test_k8s_security.py; images and
versions: test_k8s_images.py.
"""
from __future__ import annotations

import copy
import glob
import gzip
import json
import os
import re
import shutil
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import referencing
import referencing.jsonschema
import yaml
from kubernetes_validate import utils as kv

from infra.nightly import config as nightly_config, launch as nightly_launch
from tests.conftest import ROOT

K8S_VERSION = "1.30"
K8S = os.path.join(ROOT, "k8s")
EXTERNAL_SECRETS = {"s3-credentials", "cassandra-credentials"}     # created out of band in production
HOST_KEYS = "trainer-ssh-host-keys"         # made by the operator everywhere (k8s/ssh-host-keys.sh)


# -- validators ------------------------------------------------------------------------------------
def k8s_schema_dir() -> str:
    version = [v for v in kv.all_versions() if kv.major_minor(v) == K8S_VERSION][-1]
    return f"v{version}-local-strict"


def k8s_validator(schema_file: str) -> jsonschema.Validator:
    """A validator for one strict Kubernetes schema file (e.g. podtemplatespec-v1.json)."""
    directory = k8s_schema_dir()
    schema = kv.schema_contents(f"kubernetes-json-schema/{directory}/{schema_file}", K8S_VERSION)
    definitions = kv.schema_contents(f"kubernetes-json-schema/{directory}/_definitions.json", K8S_VERSION)
    registry = referencing.Resource.from_contents(schema) @ referencing.Registry()
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


POD_TEMPLATE = k8s_validator("podtemplatespec-v1.json")
POD = k8s_validator("pod-v1.json")
OBJECT_META = k8s_validator("objectmeta-meta-v1.json")


def strict(schema):
    """CRD structural schemas let unknown fields through (the API server prunes them silently);
    make every object that lists its properties reject others, as kubectl's strict validation does."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_validator(filename: str):
    with gzip.open(os.path.join(K8S, "schemas", filename)) as f:
        vendored = json.load(f)
    schema = strict(vendored["openAPIV3Schema"])
    api = f"{vendored['group']}/{vendored['version']}"
    schema["properties"]["metadata"] = {"type": "object"}          # checked against ObjectMeta below
    schema["properties"]["apiVersion"] = {"const": api}             # implicit in a CRD's schema
    schema["properties"]["kind"] = {"const": vendored["kind"]}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    return api, vendored["kind"], jsonschema.Draft7Validator(schema)


CRDS = {(api, kind): validator for api, kind, validator in (
    crd_validator("mpijob-kubeflow.org-v2beta1.json.gz"),
    crd_validator("flinkdeployment-flink.apache.org-v1beta1.json.gz"))}


def embedded_pods(obj: dict) -> list[tuple[str, dict, jsonschema.Validator]]:
    """Pod templates inside custom resources, with the Kubernetes schema each must satisfy."""
    spec = obj.get("spec", {})
    if obj["kind"] == "MPIJob":
        return [(f"mpiReplicaSpecs.{role}.template", replica["template"], POD_TEMPLATE)
                for role, replica in spec["mpiReplicaSpecs"].items()]
    if obj["kind"] == "FlinkDeployment":
        found = [("podTemplate", spec["podTemplate"], POD)] if "podTemplate" in spec else []
        for part in ("jobManager", "taskManager"):
            if "podTemplate" in spec.get(part, {}):
                found.append((f"{part}.podTemplate", spec[part]["podTemplate"], POD))
        return found
    return []


def errors(obj: dict) -> list[str]:
    """Every schema error of one object, as 'kind/name: path: message'."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRDS:
        found = [(e.absolute_path, e.message) for e in CRDS[key].iter_errors(obj)]
        found += [(["metadata", *e.absolute_path], e.message) for e in OBJECT_META.iter_errors(obj["metadata"])]
        for path, template, validator in embedded_pods(obj):
            found += [([path, *e.absolute_path], e.message) for e in validator.iter_errors(template)]
    else:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            found = []
        except kubernetes_validate.ValidationError as e:
            found = [(e.absolute_path, e.message)]
        except kv.SchemaNotFoundError as e:                     # never a silent pass
            found = [([], e.message)]
    return [f"{where}: {'.'.join(map(str, path))}: {message}" for path, message in found]


# -- what there is to check ----------------------------------------------------------------------
def manifest_files() -> list[str]:
    files = []
    for path in sorted(glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if docs and all("apiVersion" in d and "kind" in d for d in docs) and \
                docs[0]["kind"] not in ("Kustomization", "Component"):
            files.append(os.path.relpath(path, K8S))
    return files


def load(relative: str) -> list[dict]:
    with open(os.path.join(K8S, relative)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomize(directory: str) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl (with kustomize built in) is not installed")
    result = subprocess.run(["kubectl", "kustomize", os.path.join(K8S, directory)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


RENDERED = {}


def rendered(directory: str) -> list[dict]:
    if directory not in RENDERED:
        RENDERED[directory] = kustomize(directory)
    return RENDERED[directory]


def merged_template(common: dict, specific: dict) -> dict:
    """A Flink role's pod as the operator builds it: the role's template over the common one, lists
    of named things (containers, volumes) merged by name (see test_flink_templates_merge_alike)."""
    merged = {"metadata": {"labels": {**common.get("metadata", {}).get("labels", {}),
                                      **specific.get("metadata", {}).get("labels", {})}}}
    base, over = common.get("spec", {}), specific.get("spec", {})
    spec = {**base, **over}
    for key in ("containers", "initContainers", "volumes"):
        by_name = {item["name"]: item for item in base.get(key, [])}
        for item in over.get(key, []):
            by_name[item["name"]] = {**by_name.get(item["name"], {}), **item}
        if by_name:
            spec[key] = list(by_name.values())
    merged["spec"] = spec
    return merged


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(where, pod template: metadata.labels and spec) of every pod an object would create."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "Job"):
        return [(kind, spec["template"])]
    if kind == "CronJob":
        return [(kind, spec["jobTemplate"]["spec"]["template"])]
    if kind == "MPIJob":
        return [(f"MPIJob.{role}", replica["template"]) for role, replica in spec["mpiReplicaSpecs"].items()]
    if kind == "FlinkDeployment":
        return [(f"FlinkDeployment.{part}", merged_template(spec.get("podTemplate", {}),
                                                            spec[part].get("podTemplate", {})))
                for part in ("jobManager", "taskManager")]
    return []


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """(where, PodSpec) of every pod an object would create, custom resources included."""
    return [(where, template["spec"]) for where, template in pod_templates(obj)]


def with_templates(objects: list[dict]) -> list[dict]:
    """The rendered objects plus the MPIJob template the nightly reads from its ConfigMap."""
    extra = []
    for obj in objects:
        if obj["kind"] == "ConfigMap" and "mpijob-trainer.yaml" in obj.get("data", {}):
            extra.append(yaml.safe_load(obj["data"]["mpijob-trainer.yaml"]))
    return objects + extra


# -- schema validation ---------------------------------------------------------------------------
def test_there_is_something_to_validate():
    kinds = {d["kind"] for f in manifest_files() for d in load(f)}
    assert {"MPIJob", "CronJob", "FlinkDeployment", "Role", "RoleBinding", "ServiceAccount", "Job",
            "Deployment", "StatefulSet", "Service", "NetworkPolicy", "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"} <= kinds


@pytest.mark.parametrize("relative", manifest_files())
def test_manifest_file_validates(relative):
    problems = [p for obj in load(relative) for p in errors(obj)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("directory", ["base", "overlays/dev"])
def test_kustomize_renders_valid_objects(directory):
    objects = with_templates(rendered(directory))
    assert len(objects) >= 8
    problems = [p for obj in objects for p in errors(obj)]
    assert not problems, "\n".join(problems)


def test_validators_reject_what_the_api_server_would():
    job = load("base/mpijob-trainer.yaml")[0]
    typo = copy.deepcopy(job)
    typo["spec"]["slotPerWorker"] = typo["spec"].pop("slotsPerWorker")
    assert any("slotPerWorker" in e for e in errors(typo))
    bad_pod = copy.deepcopy(job)
    bad_pod["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["resource"] = {}
    assert any("mpiReplicaSpecs.Worker.template.spec.containers.0" in e for e in errors(bad_pod))
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["runPolicy"]["backoffLimit"] = "two"
    assert any("backoffLimit" in e for e in errors(wrong_type))
    cron = next(d for d in load("base/nightly-cronjob.yaml") if d["kind"] == "CronJob")
    cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMap"] = {}
    assert errors(cron)
    flink = load("base/flink-session.yaml")[0]
    flink["spec"]["taskManager"]["podTemplate"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert any("taskManager.podTemplate" in e for e in errors(flink))
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert any("Couldn't find schema" in e for e in errors(unknown))


def test_nightly_renders_an_mpijob_the_crd_accepts():
    template = load("base/mpijob-trainer.yaml")[0]
    flags = nightly_launch.trainer_flags("s3://b/datasets/m/2026-01-02", "s3://b/models/m/versions/2026-01-02",
                                         {"epochs": 2, "batch_size": 64, "args": ["--lr", "0.1"]}, "s3://b/prev/model")
    job = nightly_launch.render_mpijob(template, nightly_launch.job_name("fashion_mnist", "2026-01-02"), "ml", flags)
    assert not errors(job), errors(job)
    assert job["metadata"]["name"].startswith("train-fashion-mnist-2026-01-02")


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def operator_names(job: str, workers: int) -> list[str]:
    """The DNS labels mpi-operator derives from an MPIJob's name: the launcher Job and pod
    hostname, the workers' Service (their subdomain), each worker pod's hostname."""
    return [f"{job}-launcher", f"{job}-worker"] + [f"{job}-worker-{i}" for i in range(workers)]


@pytest.mark.parametrize("model", ["fashion_mnist", "a" * 80, "Fashion-MNIST v2 (ImageNet-21k, fine-tuned)"])
def test_nightly_job_names_fit_what_mpi_operator_derives(model):
    for directory in ("base", "overlays/dev"):
        [job] = [o for o in with_templates(rendered(directory)) if o["kind"] == "MPIJob"]
        name = nightly_launch.job_name(model, "2026-01-02")
        assert name == nightly_launch.job_name(model, "2026-01-02")       # a retry finds its job
        for derived in operator_names(name, job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]):
            assert DNS_LABEL.match(derived), derived


def test_nightly_job_names_of_different_models_differ():
    long = "resnet50_imagenet21k_finetuned_on_fashion_products_"
    pairs = [("fashion_mnist", "Fashion-MNIST"), (long + "v1", long + "v2")]
    assert all(nightly_launch.job_name(a, "2026-01-02") != nightly_launch.job_name(b, "2026-01-02")
               for a, b in pairs)


# -- what the issue asks of them -------------------------------------------------------------------
def one_off_jobs() -> list[dict]:
    """k8s/jobs as `kubectl create -k k8s/jobs` makes them (with the pinned images)."""
    return rendered("jobs")


def objects_for(source: str) -> list[dict]:
    return one_off_jobs() if source == "jobs" else with_templates(rendered(source))


@pytest.mark.parametrize("source", ["base", "overlays/dev", "jobs"])
def test_pods_run_as_non_root_with_requests_and_limits(source):
    for obj in objects_for(source):
        for where, pod in pod_specs(obj):
            pod_non_root = pod.get("securityContext", {}).get("runAsNonRoot") is True
            for container in pod.get("initContainers", []) + pod["containers"]:
                name = f"{obj['metadata']['name']} {where} {container['name']}"
                if container["name"] == "flink-main-container":
                    continue                        # the Flink operator fills in its resources
                context = container.get("securityContext", {})
                assert pod_non_root or context.get("runAsNonRoot") is True, f"{name}: may run as root"
                assert context.get("allowPrivilegeEscalation") is False, name
                resources = container.get("resources", {})
                assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{name}: requests"
                assert {"cpu", "memory"} <= set(resources.get("limits", {})), f"{name}: limits"
                for var in container.get("env", []):
                    if any(word in var["name"] for word in ("KEY", "SECRET", "PASSWORD", "USERNAME", "_SK", "AK")):
                        assert "secretKeyRef" in var.get("valueFrom", {}), f"{name}: {var['name']} not from a Secret"


def referenced_names(pod: dict) -> set[tuple[str, str]]:
    refs = set()
    if pod.get("serviceAccountName"):
        refs.add(("ServiceAccount", pod["serviceAccountName"]))
    for container in pod.get("initContainers", []) + pod["containers"]:
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            if "secretKeyRef" in ref and not ref["secretKeyRef"].get("optional"):
                refs.add(("Secret", ref["secretKeyRef"]["name"]))
            if "configMapKeyRef" in ref:
                refs.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    refs.add((kind, source[key]["name"]))
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            refs.add(("ConfigMap", volume["configMap"]["name"]))
        if "secret" in volume:
            refs.add(("Secret", volume["secret"]["secretName"]))
        if "persistentVolumeClaim" in volume:
            refs.add(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
    return refs


@pytest.mark.parametrize("directory, external", [("base", EXTERNAL_SECRETS | {HOST_KEYS}),
                                                 ("overlays/dev", {HOST_KEYS})])
def test_every_referenced_name_exists(directory, external):
    objects = with_templates(rendered(directory))
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    missing = {ref for obj in objects for _, pod in pod_specs(obj) for ref in referenced_names(pod)} - present
    missing -= {("Secret", name) for name in external}
    assert not missing, f"referenced but not defined in {directory}: {sorted(missing)}"
    if directory == "overlays/dev":
        assert {("Secret", n) for n in EXTERNAL_SECRETS} <= present


def test_one_off_jobs_refer_to_what_the_base_defines():
    assert one_off_jobs()
    present = {(o["kind"], o["metadata"]["name"]) for o in rendered("base")}
    present |= {("Secret", name) for name in EXTERNAL_SECRETS | {HOST_KEYS}}
    missing = {ref for obj in one_off_jobs() for _, pod in pod_specs(obj) for ref in referenced_names(pod)} - present
    assert not missing, sorted(missing)


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("directory, namespace", [("base", None), ("overlays/dev", "ml-dev")])
def test_nightly_cronjob_rbac_and_config(directory, namespace):
    objects = rendered(directory)
    [cron] = by_kind(objects, "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] > 0 and cron["spec"]["timeZone"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    [role] = by_kind(objects, "Role")
    assert role["rules"] == [{"apiGroups": ["kubeflow.org"], "resources": ["mpijobs"], "verbs": ["create", "get"]}]
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    [binding] = by_kind(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [{k: v for k, v in s.items() if k != "namespace"} for s in binding["subjects"]] == \
        [{"kind": "ServiceAccount", "name": account}]
    # The nightly's own configuration, as mounted, passes its loader and points at this namespace.
    [config_map] = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"] == "nightly-config"]
    config = nightly_config.from_dict(yaml.safe_load(config_map["data"]["nightly.yaml"]), directory)
    assert config.raw["train"]["launcher"] == "mpijob"
    assert config.raw["mpijob"]["template"] == "/etc/nightly/mpijob-trainer.yaml"
    if namespace:
        assert config.raw["mpijob"]["namespace"] == namespace
        assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace")


@pytest.mark.parametrize("directory, gpus", [("base", "4"), ("overlays/dev", None)])
def test_trainer_mpijob_shape(directory, gpus):
    [job] = [o for o in with_templates(rendered(directory)) if o["kind"] == "MPIJob"]
    spec = job["spec"]
    assert spec["launcherCreationPolicy"] == "WaitForWorkersReady"
    assert spec["runPolicy"]["backoffLimit"] >= 1 and spec["runPolicy"]["ttlSecondsAfterFinished"] > 0
    worker = spec["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    limits = worker["containers"][0]["resources"]["limits"]
    assert limits.get("nvidia.com/gpu") == gpus
    if gpus:
        assert spec["slotsPerWorker"] == int(gpus)          # one process per GPU
    [shm] = [v for v in worker["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in worker["containers"][0]["volumeMounts"]
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    np = int(launcher["args"][launcher["args"].index("-np") + 1])
    assert np == spec["mpiReplicaSpecs"]["Worker"]["replicas"] * spec["slotsPerWorker"]
    passed = {launcher["args"][i + 1] for i, a in enumerate(launcher["args"]) if a == "-x"}
    assert {"NCCL_SOCKET_IFNAME", "HOROVOD_GLOO_IFACE"} <= passed           # set by configuration
    assert {"configMapRef": {"name": "trainer-network"}} in launcher["envFrom"]
    if gpus:
        assert "mixed_float16" in launcher["args"]
