"""What the job's steps hand each other, as frozen dataclasses (TFDS's `_ShardSpec`/`SplitInfo`):

    LabelSpace          LabelSpace -> CheckRows, WriteShards, DropDuplicates, Publish (a singleton)
    Candidate           CheckRows -> WriteShards: a row that passed the label check
    ShardInfo           WriteShards -> DropDuplicates -> Publish: one written shard file (and
                        its index file's IndexFileInfo)
    QuarantineFileInfo  WriteQuarantine -> Publish: one written quarantine file
    Decoding            the plan -> Publish: how images were read (max pixels, EXIF orientation)
    PublishRequest      Publish -> the launcher's commit, staged as publish.json

They pickle (Beam moves them between workers); the staged request is JSON with sorted keys, so
a retried Publish rewrites the same bytes. Counts by value (`heights`, ...) have the values as
keys: ints here, strings in JSON."""
from __future__ import annotations

import collections
import dataclasses
import json
from typing import Iterable, Sequence

from pipeline.dataset.image_sizes import MAX_PIXELS, ImageSizes


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """The class list(s) every record's labels index into."""
    classes: tuple[str, ...]
    primary: str | None = None          # the attribute that is the record's `label`, if any
    attributes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # its classes

    @classmethod
    def of_attributes(cls, sizes: dict[str, int], primary: str | None) -> "LabelSpace":
        """From each attribute's number of values; `primary` (default: the first in sorted order)
        becomes the label."""
        attributes = {a: tuple(str(v) for v in range(n)) for a, n in sorted(sizes.items())}
        if not attributes:
            raise ValueError("no usable attribute file: every image was quarantined")
        primary = primary or next(iter(attributes))
        if primary not in attributes:
            raise ValueError(f"--label_attribute {primary}: the attribute files have no such "
                             f"attribute (they have {', '.join(attributes)})")
        return cls(attributes[primary], primary, attributes)

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "primary": self.primary,
                "attributes": {a: list(c) for a, c in self.attributes.items()}}

    @classmethod
    def from_json(cls, doc: dict) -> "LabelSpace":
        return cls(tuple(doc["classes"]), doc["primary"],
                   {a: tuple(c) for a, c in doc["attributes"].items()})


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A row that passed the label check: what its shard's writer needs to make a record."""
    id: str
    source: str                 # where it came from, for quarantine entries
    url: str | None
    image: bytes | None         # inline bytes (Cassandra), else read from `url` by the writer
    size: int                   # bytes, estimated: what the shard counts are sized by
    split: str
    label: int                  # index into the label space's classes
    label_name: str
    attributes: dict[str, int]  # {attribute: class index} (attribute files only)


@dataclasses.dataclass(frozen=True)
class PixelSums:
    """A shard's images of one channel count: their pixels, and per channel the sums of the
    pixel values and of their squares on the [0, 1] scale."""
    pixels: int
    sums: tuple[float, ...]
    squares: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class IndexFileInfo:
    """A shard's index file as written into staging (pipeline/dataset/index.py)."""
    file: str                               # its name in the dataset
    rows: int
    bytes: int
    sha256: str
    staged: str | None = None               # its name in staging when not `file` (a deduped copy)

    @property
    def staged_file(self) -> str:
        return self.staged or self.file


BY_INT_VALUE = ("heights", "widths", "channel_counts", "orientations")     # counts keyed by an int: str keys in JSON


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard file as written into staging, and what publish adds up from it."""
    split: str
    index: int
    shards: int                             # of the split
    file: str                               # its name in the dataset
    records: int
    bytes: int
    sha256: str
    class_counts: tuple[int, ...]
    attribute_counts: dict[str, tuple[int, ...]]
    pixel_stats: dict[int, PixelSums]       # by channel count
    heights: dict[int, int]                 # {height as displayed: images}
    widths: dict[int, int]
    formats: dict[str, int]                 # {"png": images}
    channel_counts: dict[int, int]
    staged: str | None = None               # its name in staging when not `file` (a deduped copy)
    orientations: dict[int, int] = dataclasses.field(default_factory=dict)   # {EXIF 2-8: images}
    index_file: IndexFileInfo | None = None     # None: --no_index

    @property
    def staged_file(self) -> str:
        return self.staged or self.file

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        doc.update(class_counts=list(self.class_counts),
                   attribute_counts={a: list(c) for a, c in self.attribute_counts.items()},
                   pixel_stats={str(c): {"pixels": p.pixels, "sums": list(p.sums), "squares": list(p.squares)}
                                for c, p in self.pixel_stats.items()},
                   **{key: {str(v): n for v, n in getattr(self, key).items()} for key in BY_INT_VALUE})
        if self.staged is None:
            del doc["staged"]
        if self.index_file is None:
            del doc["index_file"]
        elif self.index_file.staged is None:
            del doc["index_file"]["staged"]
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> "ShardInfo":
        return cls(**dict(
            doc, class_counts=tuple(doc["class_counts"]),
            attribute_counts={a: tuple(c) for a, c in doc["attribute_counts"].items()},
            pixel_stats={int(c): PixelSums(p["pixels"], tuple(p["sums"]), tuple(p["squares"]))
                         for c, p in doc["pixel_stats"].items()},
            **{key: {int(v): n for v, n in doc.get(key, {}).items()} for key in BY_INT_VALUE},
            index_file=IndexFileInfo(**doc["index_file"]) if doc.get("index_file") else None))


@dataclasses.dataclass(frozen=True)
class QuarantineFileInfo:
    """One quarantine file as written into staging."""
    file: str
    entries: int
    by_reason: dict[str, int]       # {reason kind: entries}


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How the job read the images, which every reader of the dataset repeats (the manifest's
    max_pixels and exif_orientation)."""
    max_pixels: int = MAX_PIXELS
    exif_orientation: bool = True       # False: --ignore_orientation


@dataclasses.dataclass(frozen=True)
class PublishRequest:
    """What the launcher commits (publish.py): every staged file's info, and what the manifest
    says besides."""
    name: str
    space: LabelSpace
    source: dict                    # {"layout", "images", "labels", "span"}: the manifest's source
    shards: tuple[ShardInfo, ...]   # every split's, in split order, then by index
    quarantine: tuple[QuarantineFileInfo, ...]     # sorted by file
    decoding: Decoding = dataclasses.field(default_factory=lambda: Decoding())

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "space": self.space.to_json(), "source": self.source,
                           "shards": [s.to_json() for s in self.shards],
                           "quarantine": [dataclasses.asdict(q) for q in self.quarantine],
                           "decoding": dataclasses.asdict(self.decoding)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PublishRequest":
        doc = json.loads(text)
        return cls(doc["name"], LabelSpace.from_json(doc["space"]), doc["source"],
                   tuple(ShardInfo.from_json(s) for s in doc["shards"]),
                   tuple(QuarantineFileInfo(**q) for q in doc["quarantine"]),
                   Decoding(**doc.get("decoding", {})))


def summed(counts: Iterable[dict]) -> dict:
    """Counts by value ({value: n}) added up."""
    total: collections.Counter = collections.Counter()
    for count in counts:
        total.update(count)
    return dict(total)


def image_sizes(shards: Sequence[ShardInfo]) -> ImageSizes | None:
    """The summary of these shards' images (None when they hold none)."""
    heights = summed(s.heights for s in shards)
    if not heights:
        return None
    return ImageSizes.from_counts(heights, summed(s.widths for s in shards),
                                  summed(s.formats for s in shards), summed(s.channel_counts for s in shards),
                                  summed(s.orientations for s in shards))
