"""The manifest: the one file that makes a directory of shards a published dataset.

It is written last by the ingestion job and read first by the trainer. It lists every shard
file of every split with its record count, size and sha256, the class list, the image shape
(when all images share one), each split's size distribution, and what was quarantined. Like
TFDS's dataset_info.json, but it is also the commit point: shards without a manifest are not a
dataset. No timestamps inside, so the same input gives a
byte-identical manifest.

Files are named relative to the dataset directory (every name is made in naming.py). A dataset
published by the current job keeps each version in its own folder, named by the content
(`v-<sha256 of its manifest>`):

    <dataset>/manifest.json            the commit point: names files as v-<id>/<file>
    <dataset>/v-<id>/manifest.json     the same version on its own (files relative to v-<id>/)
    <dataset>/v-<id>/PUBLISHED.json    when it was committed (orders versions for retiring)
    <dataset>/v-<id>/<shard files>, quarantine-<i>-of-<n>.jsonl (older: quarantine.jsonl)
    <dataset>/v-<id>/index-<split>-<i>-of-<n>.parquet   one per shard: its records (index.py)

Older datasets keep their files beside the manifest ("flat"); readers handle both alike, since
they only ever join the dataset URL with a shard's relative name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from pipeline.dataset import records
from pipeline.dataset.naming import MANIFEST_NAME, is_version_id
from pipeline.dataset.quarantine import files as quarantine_files
from pipeline.dataset.image_sizes import MAX_PIXELS, ImageSizes
from pipeline.dataset.storage import Storage, join

SPLITS = ("train", "validation", "test")


class DatasetNotFound(Exception):
    """No published dataset at the given location."""


@dataclasses.dataclass
class Shard:
    file: str       # relative to the dataset directory
    records: int
    bytes: int
    sha256: str


@dataclasses.dataclass
class IndexFile:
    """One shard's index file (pipeline/dataset/index.py), listed beside the shards."""
    file: str       # relative to the dataset directory
    rows: int
    bytes: int
    sha256: str


@dataclasses.dataclass
class Split:
    shards: list[Shard]
    class_counts: list[int]
    # Per-channel mean and standard deviation of pixel values on the [0, 1] scale, for the
    # trainer's standardisation; for a split that mixes grey and colour, those of its images
    # decoded as RGB (older manifests: None for such a split).
    pixel_mean: list[float] | None = None
    pixel_std: list[float] | None = None
    attribute_counts: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    image_sizes: ImageSizes | None = None      # None in manifests older than variable sizes
    index: list[IndexFile] = dataclasses.field(default_factory=list)   # in shard order; [] before the index

    @property
    def num_records(self) -> int:
        return sum(s.records for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)


@dataclasses.dataclass
class Manifest:
    name: str
    classes: list[str]
    image_shape: list[int] | None     # [height, width, channels] when all images agree
    splits: dict[str, Split]
    quarantine: dict                   # {"count": n, "by_reason": {...}, "files": [...]}
    source: dict
    format_version: int = records.FORMAT_VERSION
    # Multi-label data (one label per attribute): attribute -> its classes. `classes` are those of
    # the primary attribute, which is also the `label` feature. Empty for single-label data.
    label_attributes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    duplicates: int = 0      # records dropped because an identical image was kept under another id
    version: str | None = None     # the version folder (v-<id>); None: a flat dataset
    empty_classes: list[str] = dataclasses.field(default_factory=list)   # classes with no records
    # How the job read the images, which readers repeat: the pixel limit checked on every header
    # before decoding, and whether records carry the JPEGs' EXIF orientation (then the serving
    # signature reads it from the bytes too). Older manifests: the default limit, and no.
    max_pixels: int = MAX_PIXELS
    exif_orientation: bool = False
    def to_json(self) -> str:
        doc = {
            "format_version": self.format_version,
            "name": self.name,
            "features": records.FEATURE_TYPES,
            "classes": self.classes,
            "image_shape": self.image_shape,
            "splits": {
                name: {"num_records": s.num_records, "num_bytes": s.num_bytes,
                       "class_counts": s.class_counts, "pixel_mean": s.pixel_mean,
                       "pixel_std": s.pixel_std, "attribute_counts": s.attribute_counts,
                       "shards": [dataclasses.asdict(x) for x in s.shards],
                       **({"image_sizes": s.image_sizes.to_json()} if s.image_sizes else {}),
                       **({"index": [dataclasses.asdict(x) for x in s.index]} if s.index else {})}
                for name, s in self.splits.items()
            },
            "quarantine": self.quarantine,
            "source": self.source,
            "label_attributes": self.label_attributes,
            "duplicates": self.duplicates,
            "max_pixels": self.max_pixels,
            "exif_orientation": self.exif_orientation,
        }
        if self.version:
            doc["version"] = self.version
        if self.empty_classes:          # only when there are (older manifests stay as they were)
            doc["empty_classes"] = self.empty_classes
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        doc = json.loads(text)
        if doc.get("format_version") != records.FORMAT_VERSION:
            raise ValueError(f"manifest format_version {doc.get('format_version')} is not "
                             f"{records.FORMAT_VERSION}; re-ingest or upgrade the trainer")
        splits = {name: Split(shards=[Shard(**x) for x in s["shards"]],
                              class_counts=s["class_counts"], pixel_mean=s.get("pixel_mean"),
                              pixel_std=s.get("pixel_std"),
                              attribute_counts=s.get("attribute_counts", {}),
                              image_sizes=ImageSizes.from_json(s.get("image_sizes")),
                              index=[IndexFile(**x) for x in s.get("index", [])])
                  for name, s in doc["splits"].items()}
        return cls(name=doc["name"], classes=doc["classes"], image_shape=doc["image_shape"],
                   splits=splits, quarantine=doc["quarantine"], source=doc["source"],
                   label_attributes=doc.get("label_attributes", {}),
                   duplicates=doc.get("duplicates", 0), version=doc.get("version"),
                   empty_classes=doc.get("empty_classes", []),
                   max_pixels=doc.get("max_pixels", MAX_PIXELS),
                   exif_orientation=doc.get("exif_orientation", False))

    @property
    def content_id(self) -> str:
        """Which data this is: its version folder (named by its content), or for a flat dataset
        the sha256 of its manifest (no timestamps inside: the same data, the same id)."""
        return self.version or "sha256:" + hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def channels(self) -> int | None:
        """The channel count every image has, or None (mixed, or a manifest without sizes)."""
        if self.image_shape:
            return self.image_shape[2]
        counts = {c for s in self.splits.values() if s.image_sizes for c in s.image_sizes.channels}
        return int(counts.pop()) if len(counts) == 1 else None

    def shard_urls(self, dataset_url: str, split: str) -> list[str]:
        if split not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {split!r} "
                           f"(it has: {', '.join(self.splits)})")
        return [join(dataset_url, s.file) for s in self.splits[split].shards]


    def files(self) -> list[str]:
        """Every file it names, relative to the dataset directory (shards, the quarantine, the index)."""
        shards = [s.file for split in self.splits.values() for s in split.shards]
        index = [x.file for split in self.splits.values() for x in split.index]
        return shards + quarantine_files(self.quarantine) + index

    def under(self, folder: str) -> "Manifest":
        """The same manifest seen from the parent of `folder`: every file is `folder/<file>`."""
        splits = {name: dataclasses.replace(s, shards=[dataclasses.replace(x, file=f"{folder}/{x.file}")
                                                       for x in s.shards],
                                            index=[dataclasses.replace(x, file=f"{folder}/{x.file}")
                                                   for x in s.index])
                  for name, s in self.splits.items()}
        moved = dict(self.quarantine)
        if moved.get("file"):
            moved["file"] = f"{folder}/{moved['file']}"
        if moved.get("files") is not None:
            moved["files"] = [f"{folder}/{name}" for name in moved["files"]]
        return dataclasses.replace(self, splits=splits, quarantine=moved)


def read_manifest(storage: Storage, dataset_url: str, version: str | None = None) -> Manifest:
    """The dataset's current manifest, or with `version` (`v-<id>`, e.g. a manifest's
    `.version` read earlier) that version's, seen from the dataset URL like the current one:
    read each split of one version by passing it, so a publish in between never mixes two."""
    if version is not None:
        return read_version(storage, dataset_url, version)
    url = join(dataset_url, MANIFEST_NAME)
    try:
        text = storage.read_text(url)
    except FileNotFoundError:
        raise DatasetNotFound(
            f"no published dataset at {dataset_url}: {MANIFEST_NAME} is missing "
            "(shards without a manifest are an unfinished or crashed ingestion)") from None
    return Manifest.from_json(text)


def current_version(storage: Storage, dataset_url: str) -> str | None:
    """The version `dataset_url` serves now (None for a dataset published before versions)."""
    return read_manifest(storage, dataset_url).version


def read_version(storage: Storage, dataset_url: str, version: str) -> Manifest:
    if not is_version_id(version):
        raise DatasetNotFound(f"{version!r} is not a dataset version (v- and 16 hex digits)")
    try:
        manifest = Manifest.from_json(storage.read_text(join(dataset_url, version, MANIFEST_NAME)))
    except FileNotFoundError:
        raise DatasetNotFound(f"version {version} of {dataset_url} is not there (never "
                              "published, or retired: --keep_versions)") from None
    if manifest.version != version:
        raise DatasetNotFound(f"{dataset_url}/{version}/{MANIFEST_NAME} names version "
                              f"{manifest.version}: not a version folder this job wrote")
    return manifest.under(version)


def write_manifest(storage: Storage, dataset_url: str, manifest: Manifest, **condition) -> str:
    """Write `dataset_url`/manifest.json; `condition` as Storage.write_bytes (if_none_match,
    if_match) makes it a compare-and-swap."""
    url = join(dataset_url, MANIFEST_NAME)
    storage.write_text(url, manifest.to_json(), **condition)
    return url
