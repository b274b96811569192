"""A run's input summed up in one sha256, so a second run of the same input finds the dataset
already published and says so instead of ingesting it again (as TFDS's download_and_prepare
reuses a prepared dataset).

The fingerprint covers everything that decides the published bytes: every source object's key,
size and stamp (an S3 ETag or a local modification time, from the listing: no image is read),
the labels file's stamp, the resolved class list, every flag of the job that shapes the output,
and the job's own code (a fixed bug must be able to change a dataset). It is kept in the
manifest's `source`. A Cassandra table cannot be summed up without reading it, nor a source of
more than MAX_OBJECTS objects without a long listing: no fingerprint, always ingested.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib

from pipeline.dataset.storage import Storage, relative

# Flags that change where or how a run works, never what it publishes.
NOT_OUTPUT = {"output", "overwrite", "keep_versions", "staging_lease_seconds", "shared_filesystem",
              "log_file", "log_level", "verbose", "progress_seconds", "fetch_threads", "reingest"}
CODE = pathlib.Path(__file__).resolve().parent
# Past this many source objects the launcher does not list them all up front (at 10^9 images
# that is a million list requests): such a run has no fingerprint and is always ingested.
MAX_OBJECTS = 2_000_000


def code_digest() -> str:
    """sha256 over the job's source files (pipeline/, the contract included)."""
    h = hashlib.sha256()
    for path in sorted(CODE.rglob("*.py")):
        h.update(str(path.relative_to(CODE)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def output_flags(options) -> dict:
    """The job's own flags (not Beam's) that shape what it publishes, by name."""
    from pipeline.options import IngestOptions

    parser = argparse.ArgumentParser()
    IngestOptions._add_argparse_args(parser)
    names = {action.dest for action in parser._actions} - NOT_OUTPUT - {"help"}
    values = options.get_all_options(drop_default=False)
    return {name: values.get(name) for name in sorted(names) if "password" not in name}


def of_run(storage: Storage, options, plan) -> str | None:
    """The run's fingerprint, or None for a Cassandra source."""
    if plan.cassandra:
        return None
    h = hashlib.sha256()
    settings = {"code": code_digest(), "flags": output_flags(options), "classes": plan.classes,
                "layout": plan.layout, "labels": plan.labels and storage.stamp(plan.labels)}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for count, (url, size, stamp) in enumerate(storage.stamps(plan.source)):
        if count == MAX_OBJECTS:
            return None
        h.update(f"{relative(url, plan.source)}\0{size}\0{stamp}\n".encode())
    return h.hexdigest()


def published(storage: Storage, output_url: str, fingerprint: str | None):
    """The manifest at `output_url` when it was published from this same input, else None."""
    from pipeline.dataset.manifest import DatasetNotFound, read_manifest

    if fingerprint is None:
        return None
    try:
        manifest = read_manifest(storage, output_url)
    except DatasetNotFound:
        return None
    return manifest if (manifest.source or {}).get("fingerprint") == fingerprint else None
