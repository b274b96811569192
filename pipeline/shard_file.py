"""One shard file: its examples, label counts and pixel sums, written as a TFRecord file
(complete or not at all) with its size and sha256; and beside it the shard's index file (one
Parquet row per record: pipeline/dataset/index.py), written by the same worker."""
from __future__ import annotations

import collections
import hashlib

from pipeline import images
from pipeline.dataset import index as index_lib, naming, records, tfrecord
from pipeline.dataset.local_files import file_digest
from pipeline.dataset.storage import Storage, join
from pipeline.elements import IndexFileInfo, LabelSpace, PixelSums, ShardInfo


class ShardBuilder:
    """Accumulates one shard's examples, label counts and pixel sums, and its index rows unless
    `index` is off (--no_index)."""

    def __init__(self, space: LabelSpace, split: str = "", span: str | None = None, index: bool = True):
        self.index = index_lib.IndexRows(split, span, space.attributes) if index else None
        self.examples: list[bytes] = []
        self.class_counts = [0] * len(space.classes)
        self.attribute_counts = {a: [0] * len(c) for a, c in space.attributes.items()}
        # Counted by value (pipeline/dataset/image_sizes.py): bounded by the largest side, not the images.
        self.heights: collections.Counter = collections.Counter()
        self.widths: collections.Counter = collections.Counter()
        self.formats: collections.Counter = collections.Counter()
        self.channel_counts: collections.Counter = collections.Counter()
        self.orientations: collections.Counter = collections.Counter()   # turned photos only
        self.stats: dict[int, list] = {}          # channels -> [pixels, sums, squared sums]
        self.duplicate_ids: list[dict] = []

    @property
    def count(self) -> int:
        return len(self.examples)

    def add(self, prepared: images.PreparedImage, record_id: str, label: int, label_name: str,
            attributes: dict[str, int], source: str = "") -> None:
        info = prepared.info
        self.examples.append(records.encode_example(records.ImageRecord(
            id=record_id, image=prepared.data, image_format=info.format,
            height=info.height, width=info.width, channels=info.channels,
            label=label, label_name=label_name, attributes=attributes, orientation=info.orientation)))
        if self.index:
            self.index.add(record_id, label, label_name, len(self.examples[-1]),
                           hashlib.sha256(prepared.data).hexdigest(), info.format, info.height, info.width,
                           source, attributes)
        self.class_counts[label] += 1
        for attribute, value in attributes.items():
            self.attribute_counts[attribute][value] += 1
        height, width = info.displayed              # sizes as a person sees them
        self.heights[height] += 1
        self.widths[width] += 1
        if info.orientation != 1:
            self.orientations[info.orientation] += 1
        self.formats[info.format] += 1
        self.channel_counts[info.channels] += 1
        acc = self.stats.setdefault(info.channels, [0, [0.0] * info.channels, [0.0] * info.channels])
        acc[0] += prepared.pixels
        acc[1] = [a + b for a, b in zip(acc[1], prepared.pixel_sum)]
        acc[2] = [a + b for a, b in zip(acc[2], prepared.pixel_sq_sum)]

    def write(self, storage: Storage, staging_url: str, split: str, index: int, shards: int, file: str,
              staged: str | None = None) -> ShardInfo:
        """Write the shard into staging (`file` in the dataset, `staged` in staging if not
        `file`), then its index file beside it (named alike: deduped/ when the shard is)."""
        size, digest = write_shard_file(storage, join(staging_url, staged or file), self.examples)
        return ShardInfo(
            split=split, index=index, shards=shards, file=file, records=self.count, bytes=size,
            sha256=digest, class_counts=tuple(self.class_counts),
            attribute_counts={a: tuple(c) for a, c in self.attribute_counts.items()},
            pixel_stats={c: PixelSums(p, tuple(s), tuple(q)) for c, (p, s, q) in sorted(self.stats.items())},
            heights=dict(sorted(self.heights.items())), widths=dict(sorted(self.widths.items())),
            formats=dict(sorted(self.formats.items())),
            channel_counts=dict(sorted(self.channel_counts.items())), staged=staged,
            orientations=dict(sorted(self.orientations.items())),
            index_file=self._write_index(storage, staging_url, split, index, shards, file, staged))

    def _write_index(self, storage: Storage, staging_url: str, split: str, index: int, shards: int,
                     file: str, staged: str | None) -> IndexFileInfo | None:
        if self.index is None:
            return None
        name = naming.index_files(split).name(index, shards)
        staged_name = naming.deduped(name) if staged else None
        with storage.writing(join(staging_url, staged_name or name)) as path:
            index_lib.write_index(path, self.index.table(file))
            digest, size = file_digest(path)
        return IndexFileInfo(name, self.count, size, digest, staged_name)


def write_shard_file(storage: Storage, url: str, examples: list[bytes]) -> tuple[int, str]:
    """Write examples as a TFRecord file, complete or not at all (Storage.writing: beside the
    target then renamed, or locally then uploaded), so no reader ever sees a half-written shard.
    Returns (bytes, sha256)."""
    with storage.writing(url) as path:
        with open(path, "wb") as f:
            tfrecord.write_records(f, examples)
        digest, size = file_digest(path)
    return size, digest
