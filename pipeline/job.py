"""The ingestion job: labelled images on S3 (or disk) -> sharded TFRecords + manifest.

    images ─┐
            ├─ join by key ─ resolve label/split ─ fetch + validate ─ count per split
    labels ─┘        │                  │                 │
                     └── quarantine ────┴─────────────────┤   shard by id hash ─ write shards
                                                          └── publish: manifest written last
"""
from __future__ import annotations

import posixpath
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, S3Options,
                                                  StandardOptions)

from pipeline import sharding
from pipeline.manifest import MANIFEST_NAME, Manifest
from pipeline.options import IngestOptions
from pipeline.publish import publish
from pipeline.sources import ListImages, ReadLabels
from pipeline.splits import parse_ratios
from pipeline.storage import Storage, StorageError, join
from pipeline.transforms import QUARANTINE, FetchAndValidate, ResolveLabel, WriteShard, shard_key


class UsageError(Exception):
    """A bad flag or an input that cannot be used; the message names it."""


def make_options(argv: list[str]) -> PipelineOptions:
    """Parse flags; default to the local multi-process DirectRunner with 2 workers."""
    options = PipelineOptions(argv)
    flags = " ".join(argv)
    if "--runner" not in flags:
        options.view_as(StandardOptions).runner = "DirectRunner"
    if options.view_as(StandardOptions).runner in (None, "DirectRunner"):
        direct = options.view_as(DirectOptions)
        if "--direct_running_mode" not in flags:
            direct.direct_running_mode = "multi_processing"   # real worker processes, no Prism download
        if "--direct_num_workers" not in flags:
            direct.direct_num_workers = 2
    return options


def storage_for(options: PipelineOptions) -> Storage:
    s3 = options.view_as(S3Options)
    return Storage(endpoint_url=s3.s3_endpoint_url, region=s3.s3_region_name)


class Plan:
    """Checked, resolved settings for one run (fails fast, before any worker starts)."""

    def __init__(self, options: PipelineOptions, storage: Storage):
        o = options.view_as(IngestOptions)
        for flag in ("source", "output"):
            if not getattr(o, flag):
                raise UsageError(f"--{flag} is required (see --help)")
        self.source = o.source.rstrip("/")
        self.output = o.output.rstrip("/")
        self.labels = o.labels_file or join(self.source, "labels.csv")
        self.name = o.name or posixpath.basename(self.output)
        self.num_readers, self.num_shards = o.num_readers, o.num_shards
        self.target_shard_bytes = int(o.target_shard_mb * 2**20)
        self.max_pixels, self.overwrite = o.max_pixels, o.overwrite
        self.fetch_threads = max(1, o.fetch_threads)
        if self.num_readers < 1 or self.num_shards < 0:
            raise UsageError("--num_readers must be >= 1 and --num_shards >= 0")
        try:
            self.ratios = parse_ratios(o.splits)
        except ValueError as e:
            raise UsageError(str(e)) from None
        self.classes = self._classes(o.classes, storage)
        self.staging = join(self.output, f".staging-{uuid.uuid4().hex[:12]}")
        self._check_inputs(storage)

    @staticmethod
    def _classes(spec: str | None, storage: Storage) -> list[str] | None:
        if not spec:
            return None
        if "," not in spec and (spec.startswith("s3://") or storage.exists(spec)):
            try:
                lines = storage.read_text(spec).splitlines()
            except FileNotFoundError:
                raise UsageError(f"--classes file {spec} does not exist") from None
            names = [line.strip() for line in lines if line.strip()]
        else:
            names = [name.strip() for name in spec.split(",") if name.strip()]
        if len(set(names)) != len(names) or not names:
            raise UsageError(f"--classes {spec}: the class list is empty or has duplicates")
        return names

    def _check_inputs(self, storage: Storage):
        try:
            if next(storage.list(self.source), None) is None:
                raise UsageError(f"--source {self.source}: no objects there")
            if not storage.exists(self.labels):
                raise UsageError(f"labels file {self.labels} does not exist (pass --labels_file)")
            if storage.exists(join(self.output, MANIFEST_NAME)) and not self.overwrite:
                raise UsageError(f"a dataset is already published at {self.output} "
                                 "(pass --overwrite to replace it)")
        except StorageError as e:
            raise UsageError(str(e)) from None


def build(p: beam.Pipeline, plan: Plan, storage: Storage) -> None:
    """Add the whole job to pipeline `p`."""
    images = (p | "Source" >> beam.Create([plan.source])
                | "ListImages" >> beam.ParDo(ListImages(storage, skip=(plan.labels,))))
    labels = (p | "LabelsFile" >> beam.Create([plan.labels])
                | "ReadLabels" >> beam.ParDo(ReadLabels(storage)))
    if plan.classes:
        classes = p | "Classes" >> beam.Create([plan.classes])
    else:
        classes = (labels | "LabelNames" >> beam.Map(lambda kv: kv[1]["label"])
                          | "Distinct" >> beam.Distinct()
                          | "Sorted" >> beam.combiners.ToList()
                          | beam.Map(lambda names: sorted(n for n in names if n)))

    resolved = ({"images": images, "labels": labels}
                | "JoinByKey" >> beam.CoGroupByKey()
                | "ResolveLabel" >> beam.ParDo(ResolveLabel(plan.ratios),
                                               beam.pvalue.AsSingleton(classes))
                .with_outputs(QUARANTINE, main="records"))
    fetched = (resolved.records
               | "Spread" >> beam.Reshuffle()
               | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=64)
               | "FetchAndValidate" >> beam.ParDo(FetchAndValidate(storage, plan.max_pixels,
                                                                    plan.fetch_threads))
               .with_outputs(QUARANTINE, main="examples"))

    shard_counts = (fetched.examples
                    | "SizeOf" >> beam.Map(lambda e: (e[0], (1, len(e[2]))))
                    | "SumPerSplit" >> beam.CombinePerKey(sum_pairs)
                    | "ShardCount" >> beam.Map(lambda kv: (kv[0], plan.num_shards or sharding.num_shards(
                        kv[1][0], kv[1][1], plan.num_readers, plan.target_shard_bytes))))
    shard_infos = (fetched.examples
                   | "ShardKey" >> beam.Map(shard_key, beam.pvalue.AsDict(shard_counts))
                   | "GroupShards" >> beam.GroupByKey()
                   | "WriteShards" >> beam.ParDo(WriteShard(storage, plan.staging, plan.name),
                                                 beam.pvalue.AsSingleton(classes)))
    quarantine = (resolved[QUARANTINE], fetched[QUARANTINE]) | "AllQuarantined" >> beam.Flatten()
    source = {"images": plan.source, "labels": plan.labels}
    _ = (p | "Publish" >> beam.Create([None])
           | beam.Map(lambda _, infos, bad, names: publish(
               storage, plan.staging, plan.output, plan.name, names, infos, bad, source).name,
               beam.pvalue.AsList(shard_infos), beam.pvalue.AsList(quarantine),
               beam.pvalue.AsSingleton(classes)))


def sum_pairs(pairs) -> tuple[int, int]:
    """(records, bytes) summed; safe on empty input and on partial sums (Beam re-combines them)."""
    records = size = 0
    for count, nbytes in pairs:
        records, size = records + count, size + nbytes
    return records, size
