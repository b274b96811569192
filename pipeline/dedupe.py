"""Dedupe by content: identical image bytes under several ids keep the smallest id.

Each shard writer reports (sha256 of the source bytes, (id, source, shard file)). Grouping those
small tuples by hash finds the duplicates; only the shards that hold a dropped record are read
back and written again, so the common case (no duplicates) costs one small shuffle.

The new copy is a new file (`deduped/<shard file>` in staging, its ShardInfo's `staged` name; its
index file beside it, renumbered, each record keeping its source and span from the writer's
index); the writer's files are never rewritten in place, so a retried or speculative WriteShard that puts the
pre-dedupe bytes back under the writer's name cannot change what is published.
"""
from __future__ import annotations

import os
import tempfile

import apache_beam as beam
import pyarrow.parquet as pq

from pipeline import images
from pipeline.dataset import quarantine, records, tfrecord
from pipeline.dataset.naming import deduped
from pipeline.dataset.storage import Storage, join
from pipeline.elements import LabelSpace, ShardInfo
from pipeline.shard_file import ShardBuilder
from pipeline.sources.rows import QUARANTINE


def losers(element):
    """(sha256, [(id, source, file)]) -> (file, (id, source, kept id)) for every copy but one."""
    _, copies = element
    copies = sorted(copies)
    kept = copies[0][0]
    for record_id, source, file in copies[1:]:
        yield file, (record_id, source, kept)


class RewriteShard(beam.DoFn):
    """(file, {"info": [ShardInfo], "drop": [(id, source, kept)]}) -> the ShardInfo, or that of
    a new copy without the dropped records when there are any; each dropped record as a
    quarantine entry."""

    def __init__(self, storage: Storage, staging_url: str, max_pixels: int):
        self.storage, self.staging_url, self.max_pixels = storage, staging_url, max_pixels

    def process(self, element, space: LabelSpace):
        file, grouped = element
        info, drop = list(grouped["info"])[0], {d[0]: d for d in grouped["drop"]}
        if not drop:
            yield info
            return
        for record_id, source, kept in sorted(drop.values()):
            yield beam.pvalue.TaggedOutput(QUARANTINE, quarantine.entry(
                record_id, source, f"duplicate: the same image bytes as {kept}"))
        yield self._rewrite(info, set(drop), space)

    def _rewrite(self, info: ShardInfo, drop: set[str], space: LabelSpace) -> ShardInfo:
        url = join(self.staging_url, info.file)
        sources, span = self._sources(info)
        shard = ShardBuilder(space, info.split, span, index=info.index_file is not None)
        with tempfile.TemporaryDirectory(prefix="dedupe-") as tmp:
            local = os.path.join(tmp, "shard.tfrecord")
            self.storage.download(url, local)
            with open(local, "rb") as f:
                for raw in tfrecord.read_records(f, url):
                    record = records.decode_example(raw)
                    if record.id not in drop:
                        # EXIF read again only where the writer read it (not under --ignore_orientation)
                        prepared = images.prepare_image(record.image, self.max_pixels,
                                                        orientation=record.orientation != 1)
                        shard.add(prepared, record.id, record.label, record.label_name, record.attributes,
                                  sources.get(record.id, ""))
        return shard.write(self.storage, self.staging_url, info.split, info.index,
                           info.shards, info.file, staged=deduped(info.file))

    def _sources(self, info: ShardInfo) -> tuple[dict[str, str], str | None]:
        """({id: source}, span) from the writer's index file (empty without an index)."""
        if info.index_file is None:
            return {}, None
        with tempfile.TemporaryDirectory(prefix="dedupe-") as tmp:
            local = os.path.join(tmp, "index.parquet")
            self.storage.download(join(self.staging_url, info.index_file.staged_file), local)
            table = pq.read_table(local, columns=["id", "source", "span"])
        spans = table.column("span").to_pylist()
        return dict(zip(table.column("id").to_pylist(), table.column("source").to_pylist())), (spans or [None])[0]


class DropDuplicates(beam.PTransform):
    """(ShardInfos, content hashes) -> (ShardInfos without duplicates, quarantine)."""

    def __init__(self, storage: Storage, staging_url: str, max_pixels: int, space):
        super().__init__()
        self.storage, self.staging_url, self.max_pixels, self.space = storage, staging_url, max_pixels, space

    def expand(self, inputs):
        infos, hashes = inputs
        drops = (hashes | "GroupByContent" >> beam.GroupByKey()   # (sha256, [(id, source, file)])
                        | "Duplicates" >> beam.FlatMap(losers))   # (file, (id, source, kept id))
        rewritten = ({"info": infos | "ByFile" >> beam.Map(lambda i: (i.file, i)), "drop": drops}
                     | "JoinDrops" >> beam.CoGroupByKey()     # (file, {"info": [ShardInfo], "drop": [...]})
                     | "RewriteShard" >> beam.ParDo(RewriteShard(self.storage, self.staging_url, self.max_pixels),
                                                    beam.pvalue.AsSingleton(self.space))
                     .with_outputs(QUARANTINE, main="infos"))
        return rewritten.infos, rewritten[QUARANTINE]
