"""The cluster's defences of issue 26 item 17, checked without a cluster (none runs here):

- NetworkPolicies: every pod that holds a Secret is isolated for ingress and egress, and the flows
  the manifests allow are exactly the pipeline's (an evaluator of NetworkPolicy's rules over the
  pods' labels: what the API server stores, not what a CNI enforces);
- the MPIJob admission policy's CEL, run with cel-python on the MPIJobs the manifests and the
  nightly make (allowed once pinned) and on hostile ones (refused, each by its rule);
- the trainer's ssh host keys: k8s/ssh-host-keys.sh's key and known_hosts with the image's own
  ssh and sshd settings, on a real sshd on loopback: a worker's name is trusted, another key or
  another namespace is refused.
"""
from __future__ import annotations

import copy
import functools
import os
import re
from dataclasses import dataclass

import pytest
import yaml

from infra.nightly import config as nightly_config, launch as nightly_launch
from tests.conftest import ROOT
from tests.test_k8s_manifests import K8S, load, one_off_jobs, pod_templates, rendered, with_templates

# -- NetworkPolicy, evaluated --------------------------------------------------------------------
@dataclass(frozen=True)
class End:
    """One side of a connection: a pod (its namespace and labels) or an address outside the cluster."""
    labels: tuple = ()
    namespace: str = "ml"
    external: bool = False


def pod(name: str, namespace: str = "ml") -> End:
    return End((("app.kubernetes.io/name", name),), namespace)


OUTSIDE = End(external=True)


def selects(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions", []):
        found = e["key"] in labels
        if not {"In": found and labels[e["key"]] in e.get("values", []),
                "NotIn": not found or labels[e["key"]] not in e.get("values", []),
                "Exists": found, "DoesNotExist": not found}[e["operator"]]:
            return False
    return True


def peer_admits(peer: dict, end: End, namespace: str) -> bool:
    if "ipBlock" in peer:          # cluster-external addresses (pod IPs are not matched here)
        return end.external
    if end.external:
        return False
    in_namespace = (selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": end.namespace})
                    if "namespaceSelector" in peer else end.namespace == namespace)
    return in_namespace and selects(peer.get("podSelector", {}), dict(end.labels))


def rule_admits(rule: dict, peers_key: str, end: End, port: int, namespace: str) -> bool:
    ports = rule.get("ports")
    port_ok = not ports or any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, port) for p in ports)
    peers = rule.get(peers_key)
    return port_ok and (not peers or any(peer_admits(p, end, namespace) for p in peers))


def side_allows(policies: list[dict], me: End, other: End, port: int, direction: str) -> bool:
    """Whether `me`'s policies let `other` in (Ingress) or `me` out to `other` (Egress)."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    mine = [p for p in policies if direction in p["spec"].get("policyTypes", ["Ingress"])
            and selects(p["spec"]["podSelector"], dict(me.labels))]
    return not mine or any(rule_admits(r, peers_key, other, port, me.namespace)
                           for p in mine for r in p["spec"].get(key, []))


def connects(policies: list[dict], source: End, target: End, port: int) -> bool:
    """Whether the policies (all of one namespace, that of their pods) let source reach target."""
    home = {p["metadata"].get("namespace", "ml") for p in policies}
    out = source.external or source.namespace not in home or side_allows(policies, source, target, port, "Egress")
    inn = target.external or target.namespace not in home or side_allows(policies, target, source, port, "Ingress")
    return out and inn


def network_policies(directory: str) -> list[dict]:
    return [o for o in rendered(directory) if o["kind"] == "NetworkPolicy"]


def secrets_held(spec: dict) -> set[str]:
    held = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for container in spec.get("initContainers", []) + spec["containers"]:
        held |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                 if "secretKeyRef" in e.get("valueFrom", {})}
        held |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
    return held


def unisolated(objects: list[dict], policies: list[dict]) -> list[str]:
    """Pods holding a Secret that no policy isolates for ingress or for egress."""
    found = []
    for obj in objects:
        for where, template in pod_templates(obj):
            labels = template.get("metadata", {}).get("labels", {})
            if secrets_held(template["spec"]):
                for direction in ("Ingress", "Egress"):
                    if not any(direction in p["spec"].get("policyTypes", ["Ingress"])
                               and selects(p["spec"]["podSelector"], labels) for p in policies):
                        found.append(f"{obj['metadata']['name']} {where}: no {direction} policy")
    return found


@pytest.mark.parametrize("source, policies_from", [("base", "base"), ("overlays/dev", "overlays/dev"),
                                                   ("jobs", "base")])
def test_every_pod_holding_a_secret_is_isolated(source, policies_from):
    objects = one_off_jobs() if source == "jobs" else with_templates(rendered(source))
    policies = network_policies(policies_from)
    holders = [w for o in objects for w, t in pod_templates(o) if secrets_held(t["spec"])]
    assert len(holders) >= (1 if source == "jobs" else 4)
    assert not unisolated(objects, policies)
    for policy in policies:                     # and no rule lets in (or out) anyone on any port
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            assert rule.get("from", rule.get("to")), policy["metadata"]["name"]
            if any("ipBlock" in p for p in rule.get("from", rule.get("to"))):
                assert rule.get("ports"), policy["metadata"]["name"]


def test_the_isolation_check_catches_an_unselected_pod():
    objects = copy.deepcopy(with_templates(rendered("base")))
    [cron] = [o for o in objects if o["kind"] == "CronJob"]
    cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"] = {"app.kubernetes.io/name": "sneaky"}
    policies = network_policies("base")
    assert not unisolated(objects, policies)                # the default deny covers a new pod too
    without_default = [p for p in policies if p["metadata"]["name"] != "default-deny"]
    assert unisolated(objects, without_default) == ["nightly-retrain CronJob: no Ingress policy"]
    only_flows = [p for p in without_default if p["metadata"]["name"] != "allow-dns"]   # DNS isolates egress
    assert unisolated(objects, only_flows) == ["nightly-retrain CronJob: no Ingress policy",
                                               "nightly-retrain CronJob: no Egress policy"]


def flink_ports() -> dict:
    [flink] = [o for o in rendered("base") if o["kind"] == "FlinkDeployment"]
    return {k: int(v) for k, v in flink["spec"]["flinkConfiguration"].items() if k.endswith("port")}


def test_base_flows_are_the_pipelines_and_no_more():
    p, ports = network_policies("base"), flink_ports()
    nightly, ingest, jm, tm = (pod(n) for n in ("nightly-retrain", "ingest", "ingest-flink-jobmanager",
                                                "ingest-flink-taskmanager"))
    launcher, worker, stranger = pod("trainer-launcher"), pod("trainer-worker"), pod("stranger")
    operator, data = pod("flink-kubernetes-operator", "flink-operator"), pod("cassandra", "data")
    allowed = [(nightly, jm, ports["rest.port"]), (ingest, jm, ports["rest.port"]),
               (operator, jm, ports["rest.port"]), (tm, jm, ports["jobmanager.rpc.port"]),
               (tm, jm, ports["blob.server.port"]), (jm, tm, ports["taskmanager.rpc.port"]),
               (tm, tm, ports["taskmanager.data.port"]), (launcher, worker, 2222), (worker, launcher, 40123),
               (worker, worker, 40123), (nightly, OUTSIDE, 443), (nightly, OUTSIDE, 6443), (jm, OUTSIDE, 6443),
               (tm, OUTSIDE, 443), (worker, OUTSIDE, 443), (nightly, data, 9042), (tm, data, 9042)]
    refused = [(stranger, jm, ports["rest.port"]), (stranger, tm, 50000), (nightly, tm, 50000),
               (jm, tm, 50000), (stranger, nightly, 8099), (tm, nightly, 8099), (stranger, worker, 2222),
               (nightly, worker, 2222), (tm, worker, 2222), (launcher, OUTSIDE, 443), (tm, OUTSIDE, 80),
               (tm, OUTSIDE, 6443), (worker, data, 9042), (stranger, OUTSIDE, 443), (OUTSIDE, jm, 8081),
               (worker, jm, ports["rest.port"]), (pod("x", "other"), jm, ports["rest.port"])]
    assert [f for f in allowed if not connects(p, *f)] == []
    assert [f for f in refused if connects(p, *f)] == []
    dns = End((("k8s-app", "kube-dns"),), "kube-system")
    assert all(connects(p, pod(n), dns, 53) for n in ("nightly-retrain", "trainer-worker", "stranger"))


def test_dev_flows_reach_the_in_cluster_minio_and_cassandra():
    p = network_policies("overlays/dev")
    minio, cassandra = pod("minio", "ml-dev"), pod("cassandra", "ml-dev")
    for client in ("nightly-retrain", "ingest", "trainer-worker", "ingest-flink-taskmanager", "minio-buckets"):
        assert connects(p, pod(client, "ml-dev"), minio, 9000), client
    for client in ("nightly-retrain", "ingest", "ingest-flink-taskmanager"):
        assert connects(p, pod(client, "ml-dev"), cassandra, 9042), client
    for stranger, target, port in [("stranger", minio, 9000), ("trainer-launcher", minio, 9000),
                                   ("trainer-worker", cassandra, 9042), ("stranger", cassandra, 9042),
                                   ("minio-buckets", minio, 9001)]:
        assert not connects(p, pod(stranger, "ml-dev"), target, port), (stranger, target)


# -- the MPIJob admission policy, run ---------------------------------------------------------------
def admission_objects() -> list[dict]:
    return load("admission/mpijob-policy.yaml")


@functools.lru_cache(maxsize=None)
def compiled(expression: str):
    import celpy
    env = celpy.Environment()
    return env.program(env.compile(expression))


def refusals(job: dict, trainer_repository: str) -> list[str]:
    """The messages of every validation the policy fails for this MPIJob (its CEL, run by cel-python)."""
    try:
        import celpy
    except ImportError:
        pytest.fail("cel-python is not installed (requirements-dev.txt: cel-python)")
    [policy] = [o for o in admission_objects() if o["kind"] == "ValidatingAdmissionPolicy"]
    run = lambda expression, values: compiled(expression).evaluate(values)  # noqa: E731
    values = {"object": celpy.json_to_cel(job), "variables": celpy.celtypes.MapType({}),
              "params": celpy.json_to_cel({"data": {"trainerRepository": trainer_repository}})}
    for variable in policy["spec"]["variables"]:
        values["variables"][celpy.celtypes.StringType(variable["name"])] = run(variable["expression"], values)
    return [str(run(v["messageExpression"], values)) if "messageExpression" in v else v["message"]
            for v in policy["spec"]["validations"] if not run(v["expression"], values)]


def trainer_entry() -> dict:
    with open(os.path.join(K8S, "images", "kustomization.yaml")) as f:
        [entry] = [e for e in yaml.safe_load(f)["images"] if e["name"].endswith("/trainer-gpu")]
    return entry


def pinned(job: dict, image: str) -> dict:
    job = copy.deepcopy(job)
    for replica in job["spec"]["mpiReplicaSpecs"].values():
        for container in replica["template"]["spec"]["containers"]:
            container["image"] = image
    return job


REPOSITORY = "image-classifier/trainer-gpu"
PINNED = REPOSITORY + "@sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("template", ["base/mpijob-trainer.yaml", "overlays/dev/mpijob-trainer.yaml"])
def test_admission_allows_the_trainer_mpijob_once_pinned(template):
    job = load(template)[0]
    assert refusals(pinned(job, PINNED), REPOSITORY) == []
    flags = nightly_launch.trainer_flags("s3://b/d", "s3://b/m", {"epochs": 1, "batch_size": 8, "args": []}, None)
    nightly = nightly_launch.render_mpijob(pinned(job, PINNED), "train-x", "ml", flags)
    assert refusals(nightly, REPOSITORY) == []
    # As committed, the trainer image has a tag and no digest: refused until the operator pins it.
    assert [r.split(" (")[0] for r in refusals(job, REPOSITORY)] == \
        [f"every MPIJob container must run {REPOSITORY}@sha256:<digest>"]


def hostile(change) -> dict:
    job = pinned(load("base/mpijob-trainer.yaml")[0], PINNED)
    change(job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"])
    return job


HOSTILE = {
    "another image": (lambda s: s["containers"][0].update(image="busybox@sha256:" + "0" * 64), "must run"),
    "the trainer by tag": (lambda s: s["containers"][0].update(image=REPOSITORY + ":0.1.0"), "must run"),
    "a look-alike repository": (lambda s: s["containers"][0].update(image=REPOSITORY + "x@sha256:" + "0" * 64),
                                "must run"),
    "an init container": (lambda s: s.update(initContainers=[{"name": "i", "image": "alpine:3", "securityContext":
                                                              {"allowPrivilegeEscalation": False}}]), "must run"),
    "the node's disk": (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "no hostPath"),
    "another Secret mounted": (lambda s: s["volumes"].append({"name": "c", "secret": {"secretName": "flink-token"}}),
                               "no hostPath"),
    "another Secret read": (lambda s: s["containers"][0].setdefault("env", []).append(
        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "cassandra-credentials", "key": "password"}}}),
        "may read only"),
    "the host's network": (lambda s: s.update(hostNetwork=True), "host's network"),
    "privileged": (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "non-root"),
    "an added capability": (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
                            "non-root"),
    "root": (lambda s: s["securityContext"].update(runAsUser=0), "non-root"),
    "escalation allowed": (lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
                           "non-root"),
    "another service account": (lambda s: s.update(serviceAccountName="flink"), "service account"),
    "an API token": (lambda s: s.pop("automountServiceAccountToken"), "service account"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_admission_refuses_a_hostile_mpijob(case):
    change, message = HOSTILE[case]
    found = refusals(hostile(change), REPOSITORY)
    assert len(found) == 1 and message in found[0], found


def test_admission_is_bound_where_the_nightly_creates_its_mpijobs():
    bindings = {tuple(b["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"]):
                b for b in admission_objects() if b["kind"] == "ValidatingAdmissionPolicyBinding"}
    for directory, action in (("base", "Deny"), ("overlays/dev", "Warn")):
        objects = rendered(directory)
        [config] = [o for o in objects if o["metadata"]["name"] == "nightly-config"]
        namespace = nightly_config.from_dict(yaml.safe_load(config["data"]["nightly.yaml"]), directory) \
            .raw["mpijob"]["namespace"]
        binding = bindings[(namespace,)]
        assert binding["spec"]["validationActions"] == [action]
        assert binding["spec"]["paramRef"] == {"name": "mpijob-admission", "parameterNotFoundAction": "Deny"}
        [params] = [o for o in objects if o["metadata"]["name"] == "mpijob-admission"]
        entry = trainer_entry()
        assert params["data"]["trainerRepository"] == entry.get("newName", entry["name"]) == REPOSITORY


# -- the trainer's ssh host keys, as mounted -------------------------------------------------------
def test_mpijob_pods_mount_the_host_keys_where_the_image_looks():
    with open(os.path.join(ROOT, "infra", "docker", "trainer-gpu.Dockerfile")) as f:
        image = f.read()
    folder = re.search(r"UserKnownHostsFile (\S+)/known_hosts", image).group(1)
    host_key = re.search(r"HostKey (\S+)\\n", image).group(1)
    assert os.path.dirname(host_key) == folder
    for objects in (with_templates(rendered("base")), with_templates(rendered("overlays/dev"))):
        for job in (o for o in objects if o["kind"] == "MPIJob"):
            for role, template in pod_templates(job):
                spec = template["spec"]
                [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == folder]
                [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
                assert volume["secret"]["secretName"] == "trainer-ssh-host-keys" and mount["readOnly"]
                items = {i["path"] for i in volume["secret"].get("items", [])}
                want = {"known_hosts"} if role.endswith("Launcher") else set()   # workers: every key
                assert items == want, role
