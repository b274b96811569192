"""Publishing a dataset: the workers stage it, the launcher commits it, and nothing a reader
relies on is ever changed in place.

1. `Publish` (the job's last transform, once every shard is written) fills the shard indices no
   record hashed to and writes the publish request (`publish.json`: the info of every shard and
   of every quarantine file) into the run's staging folder. Workers never touch the published
   dataset.
2. `publish()` runs in the launcher after the pipeline has finished (as TFDS finalizes from
   what the workers returned): it moves the staged shards and quarantine files into a new version folder
   `<output>/v-<id>/`, id = sha256 of that version's manifest (the same input gives the same
   version and a byte-identical manifest), writes the version's own manifest, then commits by
   writing `<output>/manifest.json` with a conditional PUT (create-only, or
   replace-only-if-unchanged since it was read), and only then marks it PUBLISHED and retires
   old versions (pipeline/versions.py) beyond --keep_versions.

A crash at any moment leaves the previous manifest and every file it names untouched; a second
`publish()` of the same request (a retry, or a re-run after a crash) gives the same manifest and
no error.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam

from pipeline import quarantine_files, versions
from pipeline.dataset.manifest import SPLITS, IndexFile, Manifest, Shard, Split, write_manifest
from pipeline.dataset.naming import MANIFEST_NAME, REQUEST_NAME, shard_files, version_folder
from pipeline.dataset.storage import Storage, WriteConflict, join
from pipeline.elements import (Decoding, LabelSpace, PixelSums, PublishRequest, QuarantineFileInfo,
                               ShardInfo, image_sizes, summed)
from pipeline.logs import FILE_ONLY
from pipeline.shard_file import ShardBuilder

log = logging.getLogger("pipeline")


class PublishConflict(Exception):
    """Another run published at the output while this one was publishing; nothing replaced."""


class Publish(beam.PTransform):
    """(ShardInfos, QuarantineFileInfos) -> the staging folder's URL, once every file is
    written: the PublishRequest is staged for the launcher to commit."""

    def __init__(self, storage: Storage, staging_url: str, name: str, source: dict, space,
                 decoding: Decoding = Decoding()):
        super().__init__()
        self.storage, self.staging_url, self.name = storage, staging_url, name
        self.source, self.space, self.decoding = source, space, decoding

    def expand(self, inputs):
        infos, bad = inputs
        return (infos.pipeline | "Once" >> beam.Create([None])
                | "StageRequest" >> beam.Map(stage_request, self.storage, self.staging_url,
                                             self.name, self.source, self.decoding,
                                             beam.pvalue.AsSingleton(self.space),
                                             beam.pvalue.AsList(infos), beam.pvalue.AsList(bad)))


def stage_request(_, storage: Storage, staging_url: str, name: str, source: dict, decoding: Decoding,
                  space: LabelSpace, infos: list[ShardInfo], bad: list[QuarantineFileInfo]) -> str:
    """Write what publish() needs into staging (deterministic, so a retried bundle rewrites
    the same bytes)."""
    request = PublishRequest(name, space, source, fill_empty_shards(storage, staging_url, name, space, infos),
                             tuple(sorted(bad, key=lambda q: q.file)), decoding)
    storage.write_text(join(staging_url, REQUEST_NAME), request.to_json())
    return staging_url


def read_request(storage: Storage, staging_url: str) -> PublishRequest:
    return PublishRequest.from_json(storage.read_text(join(staging_url, REQUEST_NAME)))


def publish(storage: Storage, staging_url: str, output_url: str, request: PublishRequest, overwrite: bool,
            keep_versions: int = versions.DEFAULT_KEEP) -> Manifest:
    """Commit the staged dataset as a new version of `output_url`; returns the published
    manifest (files relative to `output_url`)."""
    version = version_manifest(request)
    published = version.under(version.version)
    current, token = versions.current(storage, output_url)
    if current != published.to_json():
        if current is not None and not overwrite:
            raise PublishConflict(f"a dataset is already published at {output_url} "
                                  "(pass --overwrite to replace it)")
        version_url = join(output_url, version.version)
        place(storage, staging_url, version_url, request, version)
        commit(storage, output_url, published, current, token)
    versions.mark_published(storage, output_url, published.version)
    pause_for_test("retiring")
    retired = versions.retire(storage, output_url, published, keep_versions)
    storage.delete_prefix(staging_url)
    log.info("published %s at %s", published.version, output_url, extra=FILE_ONLY)   # the summary says it
    if retired:                                                                      # the summary does not
        log.info("retired %s (older than the %d versions kept: --keep_versions)", ", ".join(retired),
                 keep_versions)
    return published


def version_manifest(request: PublishRequest) -> Manifest:
    """The version's own manifest (files relative to its folder), named by its content."""
    manifest = build_manifest(request)
    digest = hashlib.sha256(manifest.to_json().encode()).hexdigest()
    manifest.version = version_folder(digest)
    return manifest


MOVERS = 32          # concurrent server-side moves: 820,000 shards one by one would take hours


def place(storage: Storage, staging_url: str, version_url: str, request: PublishRequest,
          version: Manifest) -> None:
    """Move the staged files into the version folder; its manifest, written last, says the
    folder is complete (a complete folder is never written again)."""
    if storage.exists(join(version_url, MANIFEST_NAME)):
        return
    moves = ([(join(staging_url, i.staged_file), join(version_url, i.file)) for i in request.shards]
             + [(join(staging_url, i.file), join(version_url, i.file)) for i in request.quarantine]
             + [(join(staging_url, i.index_file.staged_file), join(version_url, i.index_file.file))
                for i in request.shards if i.index_file])
    if moves:
        move_staged(storage, *moves[0])
        pause_for_test("placing")
    with ThreadPoolExecutor(MOVERS) as pool:
        list(pool.map(lambda move: move_staged(storage, *move), moves[1:]))
    write_manifest(storage, version_url, version)


def move_staged(storage: Storage, staged: str, final: str) -> None:
    if storage.exists(staged):
        storage.move(staged, final)
    elif not storage.exists(final):      # placed by an earlier try of this same request
        raise FileNotFoundError(f"staged file {staged} is missing")


def commit(storage: Storage, output_url: str, published: Manifest, current: str | None,
           token: str | None) -> None:
    """The one write that publishes: manifest.json, unless someone else changed it since we
    read it. Just before, the version it replaces is marked as having been current (PUBLISHED.json,
    or for a flat dataset a copy of its manifest), so it is kept, then retired, in turn."""
    if current is not None:
        versions.mark_replaced(storage, output_url, current)
    pause_for_test("committing")
    try:
        condition = {"if_match": token} if current is not None else {"if_none_match": True}
        write_manifest(storage, output_url, published, **condition)
    except WriteConflict:
        raise PublishConflict(f"another run published at {output_url} while this one was "
                              f"publishing; {published.version} was not committed") from None


def pause_for_test(phase: str) -> None:
    """TEST HOOK, unset in real runs: PIPELINE_TEST_PAUSE_AT=<phase> (placing, committing,
    retiring) makes publishing wait at that phase, so a test can kill -9 the job there; it goes
    on once the file PIPELINE_TEST_RESUME_FILE exists (if set)."""
    if os.environ.get("PIPELINE_TEST_PAUSE_AT") != phase:
        return
    log.info("test hook: paused at %s", phase)
    resume = os.environ.get("PIPELINE_TEST_RESUME_FILE")
    while not (resume and os.path.exists(resume)):
        time.sleep(0.1)


def fill_empty_shards(storage: Storage, staging_url: str, name: str, space: LabelSpace,
                      shard_infos: list[ShardInfo]) -> tuple[ShardInfo, ...]:
    """A shard index no record hashed to still gets its (empty) file, so `-of-N` is complete."""
    present = {(i.split, i.index) for i in shard_infos}
    totals = {i.split: i.shards for i in shard_infos}
    filled = list(shard_infos)
    for split, shards in totals.items():
        for index in range(shards):
            if (split, index) not in present:
                file_name = shard_files(name, split).name(index, shards)
                with_index = any(i.index_file for i in shard_infos)
                filled.append(ShardBuilder(space, split, index=with_index).write(
                    storage, staging_url, split, index, shards, file_name))
    return tuple(sorted(filled, key=lambda i: (SPLITS.index(i.split), i.index)))


def build_manifest(request: PublishRequest) -> Manifest:
    space, splits = request.space, {}
    for split in SPLITS:
        infos = [i for i in request.shards if i.split == split]
        if not infos:
            continue
        mean, std = pixel_statistics([i.pixel_stats for i in infos])
        splits[split] = Split(
            shards=[Shard(file=i.file, records=i.records, bytes=i.bytes, sha256=i.sha256) for i in infos],
            index=[IndexFile(file=x.file, rows=x.rows, bytes=x.bytes, sha256=x.sha256)
                   for x in (i.index_file for i in infos) if x],
            class_counts=[sum(i.class_counts[c] for i in infos) for c in range(len(space.classes))],
            pixel_mean=mean, pixel_std=std, image_sizes=image_sizes(infos),
            attribute_counts={a: [sum(i.attribute_counts[a][c] for i in infos) for c in range(len(names))]
                              for a, names in space.attributes.items()})
    bad = quarantine_files.summary(request.quarantine)
    return Manifest(
        name=request.name, classes=list(space.classes),
        image_shape=one_shape(request.shards),
        splits=splits,
        quarantine=bad,
        source=request.source, label_attributes={a: list(c) for a, c in space.attributes.items()},
        duplicates=bad["by_reason"].get("duplicate", 0),
        max_pixels=request.decoding.max_pixels, exif_orientation=request.decoding.exif_orientation,
        empty_classes=[c for k, c in enumerate(space.classes)
                       if not any(s.class_counts[k] for s in splits.values())])


def one_shape(shard_infos: tuple[ShardInfo, ...]) -> list[int] | None:
    """[height, width, channels] when every image of the dataset has it, else None."""
    sides = [summed(getattr(i, key) for i in shard_infos) for key in ("heights", "widths", "channel_counts")]
    if all(len(values) == 1 for values in sides):
        return [int(next(iter(values))) for values in sides]
    return None


def pixel_statistics(stats: list[dict[int, PixelSums]]) -> tuple[list[float] | None, list[float] | None]:
    """Per-channel mean/std over all shards (each shard's PixelSums by channel count), summed in
    shard order (so the result is deterministic). A split that mixes channel counts gets the
    statistics of the 3 channels the trainer decodes it in (crops.choose: mixed means RGB)."""
    channels = {c for shard in stats for c in shard}
    if not channels:
        return None, None
    c = channels.pop() if len(channels) == 1 else 3
    present = [as_channels(shard[k], c) for shard in stats for k in sorted(shard)]
    pixels = sum(p.pixels for p in present)
    sums = [sum(p.sums[k] for p in present) for k in range(c)]
    squares = [sum(p.squares[k] for p in present) for k in range(c)]
    mean = [s / pixels for s in sums]
    std = [max(q / pixels - m * m, 0.0) ** 0.5 for q, m in zip(squares, mean)]
    return [round(m, 6) for m in mean], [round(s, 6) for s in std]


def as_channels(sums: PixelSums, channels: int) -> PixelSums:
    """Sums of images of one channel count as the trainer's decoder sees them in `channels`
    (tf.io.decode_image): grey (and grey + alpha) repeated into R, G and B, alpha dropped.
    Exact: a decoded grey pixel is the same value in each of the three."""
    have = len(sums.sums)
    if have == channels:
        return sums
    if channels != 3:
        raise ValueError(f"no {channels}-channel view of {have}-channel images")
    pick = [0, 0, 0] if have < 3 else [0, 1, 2]
    return PixelSums(sums.pixels, tuple(sums.sums[k] for k in pick), tuple(sums.squares[k] for k in pick))
