"""The ingestion job: labelled images on S3, on disk or in Cassandra -> sharded TFRecords +
manifest, as a short chain of labelled composite transforms, each tested alone on a few elements
(tests/test_job_transforms.py; WriteQuarantine's in tests/test_scale.py):

    ReadSource ─ LabelSpace ─ CheckRows ─ WriteShards ─ DropDuplicates ─ Publish (staged request)
        │                        │            │               │              ▲
        └────────── quarantine ──┴────────────┴───────────────┴─ WriteQuarantine (files)

WriteShards groups ids and URLs by shard; each shard's writer reads its own images, so image
bytes from S3 or disk never go through a shuffle. Quarantine entries are written to files by the
workers too; what reaches Publish is one ShardInfo per shard and one QuarantineFileInfo per
quarantine file (each step's elements are typed in elements.py)."""
from __future__ import annotations

import apache_beam as beam

from pipeline.check import CheckRows, FindLabelSpace
from pipeline.dedupe import DropDuplicates
from pipeline.dataset.storage import Storage
from pipeline.elements import Decoding
from pipeline.plan import Plan
from pipeline.publish import Publish
from pipeline.quarantine_files import WriteQuarantine
from pipeline.shard_writer import WriteShard, WriteShards
from pipeline.sources.cassandra.read import ReadRows
from pipeline.sources.files import ReadFileRows


def build(p: beam.Pipeline, plan: Plan, storage: Storage) -> None:
    """Add the whole job to pipeline `p`."""
    rows, rejected = p | "ReadSource" >> read_source(plan, storage)
    space = rows | "LabelSpace" >> FindLabelSpace(plan.layout, plan.classes, plan.label_attribute)
    candidates, unlabelled = rows | "CheckRows" >> CheckRows(plan.ratios, space)
    writer = WriteShard(storage, plan.staging, plan.name, plan.max_pixels, plan.channels,
                        plan.resize, plan.fetch_threads, plan.orientation, plan.worker_memory,
                        plan.span, plan.index)
    infos, unreadable, hashes = candidates | "WriteShards" >> WriteShards(
        writer, space, plan.num_shards, plan.num_readers, plan.target_shard_bytes)
    infos, duplicates = (infos, hashes) | "DropDuplicates" >> DropDuplicates(
        storage, plan.staging, plan.max_pixels, space)
    quarantine = ((rejected, unlabelled, unreadable, duplicates) | "AllQuarantined" >> beam.Flatten()
                  | "WriteQuarantine" >> WriteQuarantine(storage, plan.staging))
    source = {"layout": plan.layout, "images": plan.source, "labels": plan.labels, "span": plan.span,
              **({"fingerprint": plan.fingerprint} if plan.fingerprint else {})}
    # The workers stage the dataset; the launcher commits it afterwards (pipeline/publish.py).
    decoding = Decoding(plan.max_pixels, plan.orientation)
    _ = (infos, quarantine) | "Publish" >> Publish(storage, plan.staging, plan.name, source, space, decoding)


def read_source(plan: Plan, storage: Storage) -> beam.PTransform:
    """PBegin -> (rows, quarantine): a Cassandra table, or files in one of their layouts."""
    if plan.cassandra:
        return ReadCassandra(plan.cassandra)
    return ReadFileRows(storage, plan.source, plan.layout, plan.labels, plan.max_image_bytes, plan.columns)


class ReadCassandra(beam.PTransform):
    """The Cassandra source rejects nothing itself: bad rows are quarantined by the checks."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def expand(self, pbegin):
        return pbegin | "ReadRows" >> ReadRows(self.config), pbegin | "NoRejects" >> beam.Create([])
