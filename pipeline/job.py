"""The ingestion job: labelled images on S3 (or disk) -> sharded TFRecords + manifest.

    source rows ─ check label/split ─ count per split ─ shard by id hash ─┐ (ids and URLs only)
         │               │                                             group by shard
         └─ quarantine ──┴──────────┬──────── read + validate + write each shard (bytes stay here)
                                    │                 │ content hashes
                                    └─────────────────┴── drop duplicates ─ publish: manifest last
"""
from __future__ import annotations

import posixpath
import re
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, S3Options,
                                                  StandardOptions)

from pipeline import sharding, sources
from pipeline.cassandra_connection import (SCHEME, CassandraConfig, CassandraSourceError, check,
                                           config_from)
from pipeline.cassandra_source import ReadRows
from pipeline.dedupe import DropDuplicates, losers
from pipeline.manifest import MANIFEST_NAME
from pipeline.options import IngestOptions
from pipeline.publish import publish
from pipeline.splits import parse_ratios
from pipeline.storage import Storage, StorageError, join
from pipeline.transforms import HASHES, QUARANTINE, CheckRow, WriteShard, shard_key, size_of


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
        self.span = self._span(o.span)
        self.source = self._in_span(o.source).rstrip("/")
        self.output = join(o.output.rstrip("/"), self.span) if self.span else o.output.rstrip("/")
        self.name = o.name or posixpath.basename(o.output.rstrip("/"))
        self.label_attribute = o.label_attribute
        self.channels, self.resize = o.channels, self._size(o.resize)
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
        if self.channels not in (0, 1, 3):
            raise UsageError(f"--channels {self.channels}: use 1 (grey), 3 (RGB) or 0 (keep)")
        self.classes = self._classes(o.classes, storage)
        self.staging = join(self.output, f".staging-{uuid.uuid4().hex[:12]}")
        self.cassandra = self._cassandra(options) if self.source.startswith(SCHEME) else None
        try:
            if self.cassandra:
                self.layout, self.labels = "cassandra", None
                self._check_output(storage)
            else:
                self.layout, self.labels = self._layout(o, storage)
                self._check_inputs(storage)
        except StorageError as e:
            raise UsageError(str(e)) from None

    def _cassandra(self, options: PipelineOptions) -> CassandraConfig:
        try:
            config = config_from(options, self.source)
            check(config)
        except CassandraSourceError as e:
            raise UsageError(str(e)) from None
        return config

    def _in_span(self, url: str | None) -> str | None:
        """`{span}` in an input path becomes the span: s3://raw/{span}/ reads one day's data."""
        if url and "{span}" in url and not self.span:
            raise UsageError(f"{url} contains {{span}}: pass --span")
        return url.replace("{span}", self.span) if url and self.span else url

    @staticmethod
    def _span(span: str | None) -> str | None:
        if span and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", span):
            raise UsageError(f"--span {span!r}: use a date or version such as 2026-11-23")
        return span

    @staticmethod
    def _size(text: str | None) -> tuple[int, int] | None:
        if not text:
            return None
        match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
        if not match or 0 in (int(match[1]), int(match[2])):
            raise UsageError(f"--resize {text!r}: use HEIGHTxWIDTH, e.g. 224x224")
        return int(match[1]), int(match[2])

    def _layout(self, o, storage: Storage) -> tuple[str, str | None]:
        """The layout asked for, or for `auto`: a labels file if there is one, else attribute
        files if the first listed files include a .csv, else folder per class."""
        labels = self._in_span(o.labels_file)
        if o.layout not in ("auto", "labels"):
            return o.layout, None
        if labels:
            return "labels", labels
        for name in ("labels.csv", "labels.jsonl"):
            if storage.exists(join(self.source, name)):
                return "labels", join(self.source, name)
        if o.layout == "labels":
            raise UsageError(f"no labels file: {self.source}/labels.csv or labels.jsonl does not "
                             "exist (pass --labels_file)")
        first = [url for (url, _), _ in zip(storage.list(self.source), range(1000))]
        if any(url.lower().endswith(".csv") for url in first):
            return "attributes", None
        return "folders", None

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
        if next(storage.list(self.source), None) is None:
            raise UsageError(f"--source {self.source}: no objects there")
        if self.labels and not storage.exists(self.labels):
            raise UsageError(f"labels file {self.labels} does not exist (pass --labels_file)")
        self._check_output(storage)

    def _check_output(self, storage: Storage):
        if storage.exists(join(self.output, MANIFEST_NAME)) and not self.overwrite:
            raise UsageError(f"a dataset is already published at {self.output} "
                             "(pass --overwrite to replace it)")
        self.stale_staging = self._stale_staging(storage)

    def _stale_staging(self, storage: Storage) -> list[str]:
        """Staging folders of runs that crashed (or run now) into the same output."""
        try:
            return [url for url, size in storage.list_children(self.output)
                    if size is None and posixpath.basename(url).startswith(".staging-")]
        except FileNotFoundError:
            return []


def build(p: beam.Pipeline, plan: Plan, storage: Storage) -> None:
    """Add the whole job to pipeline `p`."""
    rows, rejected = read_rows(p, plan, storage)
    space = label_space(p, rows, plan)
    checked = (rows | "CheckRow" >> beam.ParDo(CheckRow(plan.ratios), beam.pvalue.AsSingleton(space))
                    .with_outputs(QUARANTINE, main="candidates"))
    shard_counts = (checked.candidates
                    | "SizeOf" >> beam.Map(size_of)
                    | "SumPerSplit" >> beam.CombinePerKey(sum_pairs)
                    | "ShardCount" >> beam.Map(lambda kv: (kv[0], plan.num_shards or sharding.num_shards(
                        kv[1][0], kv[1][1], plan.num_readers, plan.target_shard_bytes))))
    written = (checked.candidates
               | "ShardKey" >> beam.Map(shard_key, beam.pvalue.AsDict(shard_counts))
               | "GroupByShard" >> beam.GroupByKey()          # ids and URLs, never image bytes
               | "WriteShards" >> beam.ParDo(
                   WriteShard(storage, plan.staging, plan.name, plan.max_pixels, plan.channels,
                              plan.resize, plan.fetch_threads), beam.pvalue.AsSingleton(space))
               .with_outputs(QUARANTINE, HASHES, main="infos"))
    drops = (written[HASHES] | "GroupByContent" >> beam.GroupByKey()
                             | "Duplicates" >> beam.FlatMap(losers))
    deduped = ({"info": written.infos | "ByFile" >> beam.Map(lambda i: (i["file"], i)), "drop": drops}
               | "JoinDrops" >> beam.CoGroupByKey()
               | "DropDuplicates" >> beam.ParDo(DropDuplicates(storage, plan.staging, plan.max_pixels),
                                                beam.pvalue.AsSingleton(space))
               .with_outputs(QUARANTINE, main="infos"))
    quarantine = ((*rejected, checked[QUARANTINE], written[QUARANTINE], deduped[QUARANTINE])
                  | "AllQuarantined" >> beam.Flatten())
    source = {"layout": plan.layout, "images": plan.source, "labels": plan.labels, "span": plan.span}
    _ = (p | "Publish" >> beam.Create([None])
           | beam.Map(lambda _, infos, bad, space: publish(
               storage, plan.staging, plan.output, plan.name, space, infos, bad, source).name,
               beam.pvalue.AsList(deduped.infos), beam.pvalue.AsList(quarantine),
               beam.pvalue.AsSingleton(space)))


def read_rows(p: beam.Pipeline, plan: Plan, storage: Storage):
    """The source's rows (see pipeline/sources.py) and the PCollections of inputs it rejected."""
    if plan.cassandra:
        return p | "ReadCassandra" >> ReadRows(plan.cassandra), []
    skip = (plan.labels or "",)
    top = (p | "Source" >> beam.Create([plan.source])
             | "ListTopLevel" >> beam.ParDo(sources.ListTopLevel(storage, skip))
             .with_outputs(sources.FOLDERS, main="files"))
    nested = (top[sources.FOLDERS] | "SpreadFolders" >> beam.Reshuffle()
                                   | "ListFolders" >> beam.ParDo(sources.ListFiles(storage, skip)))
    files = (top.files, nested) | "AllFiles" >> beam.Flatten()
    if plan.layout == "folders":
        return files | "FolderRows" >> beam.Map(sources.folder_row), []
    if plan.layout == "attributes":
        rows = (files | "ByStem" >> beam.Map(sources.by_stem)
                      | "GroupByStem" >> beam.GroupByKey()
                      | "AttributeRows" >> beam.ParDo(sources.JoinAttributes(storage))
                      .with_outputs(QUARANTINE, main="rows"))
        return rows.rows, [rows[QUARANTINE]]
    labels = (p | "LabelsFile" >> beam.Create([plan.labels])
                | "ReadLabels" >> beam.ParDo(sources.ReadLabels(storage)))
    rows = ({"images": files, "labels": labels}
            | "JoinByKey" >> beam.CoGroupByKey()
            | "LabelRows" >> beam.ParDo(sources.JoinLabels()).with_outputs(QUARANTINE, main="rows"))
    return rows.rows, [rows[QUARANTINE]]


def label_space(p: beam.Pipeline, rows, plan: Plan):
    """A singleton {"classes", "primary", "attributes"}: the class list(s) records index into."""
    if plan.layout == "attributes":
        return (rows | "AttributeSizes" >> beam.FlatMap(
                    lambda r: [(a, n) for a, (_, n) in r["attributes"].items()])
                     | "Largest" >> beam.CombinePerKey(max)
                     | "AllAttributes" >> beam.combiners.ToDict()
                     | "AttributeSpace" >> beam.Map(attribute_space, plan.label_attribute))
    if plan.classes:
        return p | "Classes" >> beam.Create([plain_space(plan.classes)])
    return (rows | "LabelNames" >> beam.Map(lambda row: row["label"])
                 | "Distinct" >> beam.Distinct()
                 | "Sorted" >> beam.combiners.ToList()
                 | "LabelSpace" >> beam.Map(lambda names: plain_space(sorted(n for n in names if n))))


def plain_space(classes: list[str]) -> dict:
    return {"classes": classes, "primary": None, "attributes": {}}


def attribute_space(sizes: dict[str, int], primary: str | None) -> dict:
    attributes = {a: [str(v) for v in range(n)] for a, n in sorted(sizes.items())}
    if not attributes:
        raise ValueError("no usable attribute file: every image was quarantined")
    primary = primary or next(iter(attributes))
    if primary not in attributes:
        raise ValueError(f"--label_attribute {primary}: the attribute files have no such "
                         f"attribute (they have {', '.join(attributes)})")
    return {"classes": attributes[primary], "primary": primary, "attributes": attributes}


def sum_pairs(pairs) -> tuple[int, int]:
    """(records, bytes) summed; safe on empty input and on partial sums (Beam re-combines them)."""
    records = size = 0
    for count, nbytes in pairs:
        records, size = records + count, size + nbytes
    return records, size
