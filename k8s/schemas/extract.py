"""Vendor one CRD version's openAPIV3Schema from an upstream CRD manifest (run by hand, offline
afterwards): python k8s/schemas/extract.py CRD.yaml CRD_NAME VERSION OUT.json.gz SOURCE_NOTE

The tests validate MPIJob and FlinkDeployment objects against these files; nothing is fetched
at test time. SOURCES.md records where each file came from."""
import gzip
import hashlib
import json
import sys

import yaml


def main(path, crd_name, version, out, note):
    raw = open(path, "rb").read()
    for doc in yaml.safe_load_all(raw):
        if doc and doc.get("kind") == "CustomResourceDefinition" and doc["metadata"]["name"] == crd_name:
            for v in doc["spec"]["versions"]:
                if v["name"] == version:
                    body = {"crd": crd_name, "group": doc["spec"]["group"], "version": version,
                            "kind": doc["spec"]["names"]["kind"], "source": note,
                            "source_sha256": hashlib.sha256(raw).hexdigest(),
                            "openAPIV3Schema": v["schema"]["openAPIV3Schema"]}
                    with gzip.GzipFile(out, "wb", mtime=0) as f:
                        f.write(json.dumps(body, sort_keys=True).encode())
                    return 0
    raise SystemExit(f"{crd_name} {version} not found in {path}")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
