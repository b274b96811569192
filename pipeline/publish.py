"""Turn staged shards into a published dataset: fill empty shards, move, write the manifest last."""
from __future__ import annotations

import collections
import json
import logging

import apache_beam as beam

from pipeline import sharding
from pipeline.dataset.manifest import (MANIFEST_NAME, QUARANTINE_NAME, SPLITS, Manifest, Shard, Split,
                                       write_manifest)
from pipeline.dataset.quarantine import reason_kind
from pipeline.dataset.storage import Storage, join
from pipeline.shard_file import ShardBuilder

log = logging.getLogger("pipeline")


class Publish(beam.PTransform):
    """(shard infos, quarantine entries) -> the dataset's name: runs once, after every shard is
    written, and commits the dataset by writing its manifest last."""

    def __init__(self, storage: Storage, staging_url: str, output_url: str, name: str, source: dict,
                 space):
        super().__init__()
        self.args = (storage, staging_url, output_url, name)
        self.source, self.space = source, space

    def expand(self, inputs):
        infos, bad = inputs
        return (infos.pipeline | "Once" >> beam.Create([None])
                | "Publish" >> beam.Map(publish_once, *self.args, self.source,
                                        beam.pvalue.AsSingleton(self.space), beam.pvalue.AsList(infos),
                                        beam.pvalue.AsList(bad)))


def publish_once(_, storage: Storage, staging_url: str, output_url: str, name: str, source: dict,
                 space: dict, infos: list[dict], bad: list[dict]) -> str:
    return publish(storage, staging_url, output_url, name, space, infos, bad, source).name


def publish(storage: Storage, staging_url: str, output_url: str, name: str, space: dict,
            shard_infos: list[dict], quarantine: list[dict], source: dict) -> Manifest:
    shard_infos = _fill_empty_shards(storage, staging_url, name, space, shard_infos)
    quarantine = sorted(quarantine, key=lambda q: (q["id"], q["reason"]))
    storage.write_text(join(staging_url, QUARANTINE_NAME),
                       "".join(json.dumps(q, sort_keys=True) + "\n" for q in quarantine))

    old_manifest = join(output_url, MANIFEST_NAME)
    if storage.exists(old_manifest):          # --overwrite: unpublish before replacing files
        storage.delete(old_manifest)
    for info in shard_infos:
        storage.move(join(staging_url, info["file"]), join(output_url, info["file"]))
    storage.move(join(staging_url, QUARANTINE_NAME), join(output_url, QUARANTINE_NAME))

    manifest = build_manifest(name, space, shard_infos, quarantine, source)
    write_manifest(storage, output_url, manifest)    # the commit point
    storage.delete_prefix(staging_url)
    return manifest


def _fill_empty_shards(storage, staging_url, name, space, shard_infos):
    """A shard index no record hashed to still gets its (empty) file, so `-of-N` is complete."""
    present = {(i["split"], i["index"]) for i in shard_infos}
    totals = {i["split"]: i["shards"] for i in shard_infos}
    filled = list(shard_infos)
    for split, shards in totals.items():
        for index in range(shards):
            if (split, index) not in present:
                file_name = sharding.shard_name(name, split, index, shards)
                filled.append(ShardBuilder(space).write(
                    storage, join(staging_url, file_name),
                    split=split, index=index, shards=shards, file=file_name))
    return sorted(filled, key=lambda i: (SPLITS.index(i["split"]), i["index"]))


def build_manifest(name, space, shard_infos, quarantine, source) -> Manifest:
    classes = space["classes"]
    splits = {}
    for split in SPLITS:
        infos = [i for i in shard_infos if i["split"] == split]
        if not infos:
            continue
        mean, std = pixel_statistics(infos)
        splits[split] = Split(
            shards=[Shard(file=i["file"], records=i["records"], bytes=i["bytes"],
                          sha256=i["sha256"]) for i in infos],
            class_counts=[sum(i["class_counts"][c] for i in infos) for c in range(len(classes))],
            pixel_mean=mean, pixel_std=std,
            attribute_counts={a: [sum(i["attribute_counts"][a][c] for i in infos)
                                  for c in range(len(names))]
                              for a, names in space["attributes"].items()})
    shapes = {tuple(s) for i in shard_infos for s in i["shapes"]}
    by_reason = collections.Counter(reason_kind(q["reason"]) for q in quarantine)
    return Manifest(
        name=name, classes=classes,
        image_shape=list(shapes.pop()) if len(shapes) == 1 else None,
        splits=splits,
        quarantine={"count": len(quarantine), "by_reason": dict(sorted(by_reason.items())),
                    "file": QUARANTINE_NAME},
        source=source, label_attributes=space["attributes"],
        duplicates=by_reason.get("duplicate", 0))


def pixel_statistics(infos: list[dict]) -> tuple[list[float] | None, list[float] | None]:
    """Per-channel mean/std over all shards, summed in shard order (so the result is
    deterministic); None when the split mixes channel counts."""
    channels = {c for i in infos for c in i["pixel_stats"]}
    if len(channels) != 1:
        return None, None
    c = channels.pop()
    pixels = sum(i["pixel_stats"][c][0] for i in infos if c in i["pixel_stats"])
    sums = [sum(i["pixel_stats"][c][1][k] for i in infos if c in i["pixel_stats"]) for k in range(int(c))]
    squares = [sum(i["pixel_stats"][c][2][k] for i in infos if c in i["pixel_stats"]) for k in range(int(c))]
    mean = [s / pixels for s in sums]
    std = [max(q / pixels - m * m, 0.0) ** 0.5 for q, m in zip(squares, mean)]
    return [round(m, 6) for m in mean], [round(s, 6) for s in std]
