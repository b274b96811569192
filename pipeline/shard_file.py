"""One shard file: its examples, label counts and pixel sums, written as a TFRecord file
(complete or not at all) with its size and sha256."""
from __future__ import annotations

import collections

from pipeline import images
from pipeline.dataset import records, tfrecord
from pipeline.dataset.local_files import file_digest
from pipeline.dataset.storage import Storage


class ShardBuilder:
    """Accumulates one shard's examples, label counts and pixel sums."""

    def __init__(self, space: dict):
        self.space = space
        self.examples: list[bytes] = []
        self.class_counts = [0] * len(space["classes"])
        self.attribute_counts = {a: [0] * len(c) for a, c in space["attributes"].items()}
        # Counted by value (pipeline/dataset/sizes.py): bounded by the largest side, not the images.
        self.heights: collections.Counter = collections.Counter()
        self.widths: collections.Counter = collections.Counter()
        self.formats: collections.Counter = collections.Counter()
        self.channel_counts: collections.Counter = collections.Counter()
        self.stats: dict[int, list] = {}          # channels -> [pixels, sums, squared sums]
        self.duplicate_ids: list[dict] = []

    @property
    def count(self) -> int:
        return len(self.examples)

    def add(self, candidate: dict, prepared: images.PreparedImage):
        info = prepared.info
        self.examples.append(records.encode_example(records.ImageRecord(
            id=candidate["id"], image=prepared.data, image_format=info.format,
            height=info.height, width=info.width, channels=info.channels,
            label=candidate["label"], label_name=candidate["label_name"],
            attributes=candidate["attributes"])))
        self.class_counts[candidate["label"]] += 1
        for attribute, value in candidate["attributes"].items():
            self.attribute_counts[attribute][value] += 1
        self.heights[info.height] += 1
        self.widths[info.width] += 1
        self.formats[info.format] += 1
        self.channel_counts[info.channels] += 1
        acc = self.stats.setdefault(info.channels, [0, [0.0] * info.channels, [0.0] * info.channels])
        acc[0] += prepared.pixels
        acc[1] = [a + b for a, b in zip(acc[1], prepared.pixel_sum)]
        acc[2] = [a + b for a, b in zip(acc[2], prepared.pixel_sq_sum)]

    def write(self, storage: Storage, url: str, **info) -> dict:
        stats = {str(c): v for c, v in sorted(self.stats.items())}
        return write_shard_file(storage, url, self.examples, **info,
                                class_counts=self.class_counts,
                                attribute_counts=self.attribute_counts,
                                pixel_stats=stats, heights=by_value(self.heights),
                                widths=by_value(self.widths), formats=dict(sorted(self.formats.items())),
                                channel_counts=by_value(self.channel_counts))


def by_value(counts: collections.Counter) -> dict[str, int]:
    """{"value": n} in ascending order of the value (JSON keys are strings)."""
    return {str(v): counts[v] for v in sorted(counts)}


def write_shard_file(storage: Storage, url: str, examples: list[bytes], **info) -> dict:
    """Write examples as a TFRecord file, complete or not at all (Storage.writing: beside the
    target then renamed, or locally then uploaded), so no reader ever sees a half-written shard."""
    with storage.writing(url) as path:
        with open(path, "wb") as f:
            tfrecord.write_records(f, examples)
        digest, size = file_digest(path)
    return dict(info, records=len(examples), bytes=size, sha256=digest)
