"""Images and versions in k8s/, each named in one place (issues 25 and 26):

- every image a rendered manifest runs is pinned by digest or comes from the one list that pins
  them, k8s/images/ (a kustomize Component), as kustomize writes it; the MPIJob templates, which
  kustomize cannot reach (a file in a ConfigMap), must spell the same reference;
- the Beam, Python and Flink versions of the Beam-on-Flink path (job server image, the task
  managers' SDK worker image, the FlinkDeployment, --flink_version) agree with k8s/versions.yaml.
Each check returns its problems, so each test also shows the check catching a planted drift.
"""
from __future__ import annotations

import copy
import os
import re
import sys

import apache_beam
import yaml
from apache_beam.options.pipeline_options import FlinkRunnerOptions

from tests.conftest import ROOT
from tests.test_k8s_manifests import K8S, one_off_jobs, pod_specs, rendered, with_templates

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def component() -> list[dict]:
    with open(os.path.join(K8S, "images", "kustomization.yaml")) as f:
        return yaml.safe_load(f)["images"]


def versions() -> dict:
    with open(os.path.join(K8S, "versions.yaml")) as f:
        return yaml.safe_load(f)


def reference(entry: dict) -> str:
    """The image reference kustomize writes for one `images:` entry: name[:tag][@digest]."""
    ref = entry.get("newName", entry["name"])
    if entry.get("newTag"):
        ref += ":" + entry["newTag"]
    return ref + ("@" + entry["digest"] if entry.get("digest") else "")


def image_name(ref: str) -> str:
    """`registry:5000/a/b:tag@sha256:...` -> `registry:5000/a/b`."""
    ref = ref.split("@")[0]
    last = ref.rsplit("/", 1)
    return ref.rsplit(":", 1)[0] if ":" in last[-1] else ref


def images_in(objects: list[dict]) -> list[tuple[str, str]]:
    """(where, image) of every container of every pod template, and a FlinkDeployment's image."""
    found = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "FlinkDeployment":
            found.append((where, obj["spec"]["image"]))
        for part, spec in pod_specs(obj):
            for container in spec.get("initContainers", []) + spec["containers"]:
                if "image" in container:                     # Flink's main container: spec.image
                    found.append((f"{where} {part} {container['name']}", container["image"]))
    return found


def unpinned(objects: list[dict], entries: list[dict]) -> list[str]:
    """Images that are neither pinned by digest nor exactly what their `images:` entry writes."""
    listed = {e["name"]: reference(e) for e in entries}
    return [f"{where}: {image}" for where, image in images_in(objects)
            if not DIGEST.search(image) and listed.get(image_name(image)) != image]


def rendered_objects(source: str) -> list[dict]:
    return one_off_jobs() if source == "jobs" else with_templates(rendered(source))


def test_every_rendered_image_is_pinned_or_comes_from_the_one_list():
    entries = component()
    assert all(DIGEST.search("@" + e["digest"]) for e in entries if "digest" in e)
    for source in ("base", "overlays/dev", "jobs"):
        objects = rendered_objects(source)
        assert len(images_in(objects)) >= 2
        assert not unpinned(objects, entries), source
    # The published digests reach the rendered objects (FlinkDeployment.spec.image included).
    [flink] = [o for o in rendered("base") if o["kind"] == "FlinkDeployment"]
    assert DIGEST.search(flink["spec"]["image"]) and flink["spec"]["image"].startswith("flink:1.20.5-java17@")


def test_the_pin_check_catches_an_image_from_elsewhere_and_a_drifted_template():
    objects, entries = copy.deepcopy(with_templates(rendered("base"))), component()
    [cron] = [o for o in objects if o["kind"] == "CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"].append({"name": "debug", "image": "busybox:1.36"})
    [template] = [o for o in objects if o["kind"] == "MPIJob"]
    template["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["image"] = \
        "image-classifier/trainer-gpu:0.0.9"
    problems = unpinned(objects, entries)
    assert any("busybox:1.36" in p for p in problems) and any("trainer-gpu:0.0.9" in p for p in problems)
    # Pinning the trainer in the one list without following in the template is drift too.
    pinned = [dict(e, digest="sha256:" + "a" * 64) if e["name"].endswith("trainer-gpu") else e for e in entries]
    assert any("trainer-gpu:0.1.0" in p for p in unpinned(with_templates(rendered("base")), pinned))


def test_manifests_name_images_without_versions_but_the_templates():
    """Versions live in k8s/images/ only; the MPIJob templates are the one documented exception."""
    tagged = []
    for directory, _, files in os.walk(K8S):
        for name in files:
            path = os.path.join(directory, name)
            if name.endswith(".yaml") and name != "mpijob-trainer.yaml":
                with open(path) as f:
                    tagged += [f"{path}: {m}" for m in re.findall(r"^\s*image: (\S*[:@]\S*)", f.read(), re.M)]
    assert not tagged


# -- versions -------------------------------------------------------------------------------------
def flink_args(source: str) -> list[list[str]]:
    """The pipeline flags of every Beam submission: the nightly's ingest args, the one-off jobs."""
    found = []
    for obj in rendered_objects(source):
        if obj["kind"] == "ConfigMap" and "nightly.yaml" in obj.get("data", {}):
            found.append(yaml.safe_load(obj["data"]["nightly.yaml"])["ingest"]["args"])
        for _, spec in pod_specs(obj):
            for container in spec["containers"]:
                if "pipeline" in container.get("command", []):
                    found.append(container.get("args", []))
    return found


def version_drift(v: dict, objects: list[dict], args: list[list[str]]) -> list[str]:
    """Every place whose Beam, Python or Flink version differs from `v` (k8s/versions.yaml)."""
    problems = []
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pin = re.search(r"^apache-beam(?:\[[^\]]*\])?==(\S+)", f.read(), re.M).group(1)
    with open(os.path.join(ROOT, "infra", "docker", "pipeline.Dockerfile")) as f:
        base = re.search(r"^FROM (\S+)", f.read(), re.M).group(1)
    checks = {
        "requirements.txt apache-beam": (pin, v["beam"]),
        "installed apache_beam": (apache_beam.__version__, v["beam"]),
        "the venv's Python": ("%d.%d" % sys.version_info[:2], v["python"]),
        "pipeline.Dockerfile FROM (the SDK worker image)": (base, f"apache/beam_python{v['python']}_sdk:{v['beam']}"),
    }
    problems += [f"{what}: {got} (want {want})" for what, (got, want) in checks.items() if got != want]
    if v["flink"] not in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS:
        problems.append(f"Beam {apache_beam.__version__} has no Flink {v['flink']} runner")
    server = f"apache/beam_flink{v['flink']}_job_server:{v['beam']}"
    for where, image in images_in(objects):
        if "job_server" in image and not image.startswith(server):
            problems.append(f"{where}: {image} (want {server})")
        if image_name(image) == "flink" and not image.startswith(f"flink:{v['flink']}."):
            problems.append(f"{where}: {image} (want Flink {v['flink']}.x)")
    for obj in objects:
        if obj["kind"] == "FlinkDeployment" and obj["spec"]["flinkVersion"] != "v" + v["flink"].replace(".", "_"):
            problems.append(f"FlinkDeployment/{obj['metadata']['name']}: flinkVersion {obj['spec']['flinkVersion']}")
    for flags in args:
        given = [a.split("=", 1)[1] for a in flags if a.startswith("--flink_version=")]
        if given != [v["flink"]]:
            problems.append(f"pipeline flags {flags}: --flink_version {given or 'missing'} (want {v['flink']})")
    return problems


def test_beam_python_and_flink_versions_agree_everywhere():
    for source in ("base", "overlays/dev", "jobs"):
        args = flink_args(source)
        assert args, source
        assert not version_drift(versions(), rendered_objects(source), args), source


def test_the_version_check_catches_drift():
    objects, args = rendered_objects("base"), flink_args("base")
    problems = version_drift({**versions(), "flink": "2.0"}, objects, args)
    assert any("beam_flink1.20_job_server" in p for p in problems)          # the job server image
    assert any("flinkVersion v1_20" in p for p in problems)                   # the FlinkDeployment
    assert any("--flink_version ['1.20']" in p for p in problems)            # the nightly's flags
    assert any(p.startswith("FlinkDeployment/ingest-flink: flink:1.20.5") for p in problems)
    problems = version_drift({**versions(), "python": "3.12", "beam": "2.76.0"}, objects, args)
    assert {p.split(":")[0] for p in problems} >= {"requirements.txt apache-beam", "installed apache_beam",
                                                   "the venv's Python", "pipeline.Dockerfile FROM (the SDK worker image)"}
    without = [[a for a in args[0] if not a.startswith("--flink_version")]]
    assert any("--flink_version missing" in p for p in version_drift(versions(), objects, without))
