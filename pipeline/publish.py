"""Turn staged shards into a published dataset: fill empty shards, move, write the manifest last."""
from __future__ import annotations

import collections
import json
import logging

from pipeline import sharding
from pipeline.manifest import (MANIFEST_NAME, QUARANTINE_NAME, SPLITS, Manifest, Shard, Split,
                               write_manifest)
from pipeline.storage import Storage, join
from pipeline.transforms import reason_kind, write_shard_file

log = logging.getLogger("pipeline")


def publish(storage: Storage, staging_url: str, output_url: str, name: str, classes: list[str],
            shard_infos: list[dict], quarantine: list[dict], source: dict) -> Manifest:
    shard_infos = _fill_empty_shards(storage, staging_url, name, len(classes), shard_infos)
    quarantine = sorted(quarantine, key=lambda q: (q["id"], q["reason"]))
    storage.write_text(join(staging_url, QUARANTINE_NAME),
                       "".join(json.dumps(q, sort_keys=True) + "\n" for q in quarantine))

    old_manifest = join(output_url, MANIFEST_NAME)
    if storage.exists(old_manifest):          # --overwrite: unpublish before replacing files
        storage.delete(old_manifest)
    for info in shard_infos:
        storage.move(join(staging_url, info["file"]), join(output_url, info["file"]))
    storage.move(join(staging_url, QUARANTINE_NAME), join(output_url, QUARANTINE_NAME))

    manifest = build_manifest(name, classes, shard_infos, quarantine, source)
    write_manifest(storage, output_url, manifest)    # the commit point
    storage.delete_prefix(staging_url)
    return manifest


def _fill_empty_shards(storage, staging_url, name, num_classes, shard_infos):
    """A shard index no record hashed to still gets its (empty) file, so `-of-N` is complete."""
    present = {(i["split"], i["index"]) for i in shard_infos}
    totals = {i["split"]: i["shards"] for i in shard_infos}
    filled = list(shard_infos)
    for split, shards in totals.items():
        for index in range(shards):
            if (split, index) not in present:
                file_name = sharding.shard_name(name, split, index, shards)
                filled.append(write_shard_file(
                    storage, join(staging_url, file_name), [], [], num_classes,
                    split=split, index=index, shards=shards, file=file_name, shapes=[]))
    return sorted(filled, key=lambda i: (SPLITS.index(i["split"]), i["index"]))


def build_manifest(name, classes, shard_infos, quarantine, source) -> Manifest:
    splits = {}
    for split in SPLITS:
        infos = [i for i in shard_infos if i["split"] == split]
        if not infos:
            continue
        counts = [sum(i["class_counts"][c] for i in infos) for c in range(len(classes))]
        splits[split] = Split(
            shards=[Shard(file=i["file"], records=i["records"], bytes=i["bytes"],
                          sha256=i["sha256"]) for i in infos],
            class_counts=counts)
    shapes = {tuple(s) for i in shard_infos for s in i["shapes"]}
    by_reason = collections.Counter(reason_kind(q["reason"]) for q in quarantine)
    return Manifest(
        name=name, classes=classes,
        image_shape=list(shapes.pop()) if len(shapes) == 1 else None,
        splits=splits,
        quarantine={"count": len(quarantine), "by_reason": dict(sorted(by_reason.items())),
                    "file": QUARANTINE_NAME},
        source=source)
