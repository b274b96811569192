"""The index of a dataset version: one Parquet row per record, written beside each shard by its
writer (`index-<split>-00003-of-00064.parquet` for shard 3 of 64 of a split), listed in the
manifest with its sha256 and published and retired with its version, like the shards.

It answers what otherwise needs every shard read: where record X is (split, shard file, record
number), what it was made from (source object or Cassandra row, span), its image's sha256,
format and size, and every label. `load_index(url)` gives a `pyarrow.dataset.Dataset` over a
version's index files, fetched once into a local cache and checked by sha256.

The same records give the same bytes: a fixed schema, rows in record order (a shard's records are
sorted by id), and the writer's options pinned here (Parquet carries no timestamp; `created_by`
names the pyarrow version, as a TFRecord shard depends on nothing but its records)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.dataset.local_files import file_digest
from pipeline.dataset.local_paths import path_under, user_cache_dir
from pipeline.dataset.manifest import IndexFile, read_manifest
from pipeline.dataset import tfrecord
from pipeline.dataset.records import attribute_key
from pipeline.dataset.storage import Storage, join

__all__ = ["COLUMNS", "IndexChecksumError", "IndexRows", "load_index", "read_record", "schema", "write_index"]

# Column -> type; `label/<attribute>` (int64) follow for attribute datasets, sorted by name.
COLUMNS = {
    "id": pa.string(), "split": pa.string(), "label": pa.int64(), "label_name": pa.string(),
    "shard": pa.string(),            # the shard file, relative to the version folder
    "record": pa.int64(),            # its position in the shard, from 0
    "offset": pa.int64(),            # where its TFRecord frame begins in the shard file (bytes)
    "image_sha256": pa.string(),     # of image/encoded as stored in the record
    "format": pa.string(), "height": pa.int64(), "width": pa.int64(),   # as stored
    "source": pa.string(),           # the object URL, or the Cassandra table URL and row key
    "span": pa.string(),             # the --span the record was ingested in (null: none)
}
# Pinned, so identical records give identical files (and one sha256 in the manifest).
WRITE_OPTIONS = {"compression": "zstd", "compression_level": 3, "use_dictionary": True,
                 "write_statistics": True, "version": "2.6", "data_page_version": "1.0",
                 "store_schema": True, "row_group_size": 1 << 20}
FETCHERS = 16


class IndexChecksumError(Exception):
    """An index file's bytes differ from the sha256 the manifest lists."""


def schema(attributes=()) -> pa.Schema:
    return pa.schema([*COLUMNS.items(), *((attribute_key(a), pa.int64()) for a in sorted(attributes))])


class IndexRows:
    """One shard's rows, gathered column by column as its writer adds records."""

    def __init__(self, split: str, span: str | None, attributes=()):
        self.split, self.span, self.attributes = split, span, sorted(attributes)
        self.columns: dict[str, list] = {name: [] for name in schema(self.attributes).names}
        self.offset = 0

    def add(self, record_id: str, label: int, label_name: str, record_bytes: int, image_sha256: str,
            image_format: str, height: int, width: int, source: str, attributes: dict[str, int]) -> None:
        values = {"id": record_id, "split": self.split, "label": label, "label_name": label_name,
                  "record": len(self.columns["id"]), "offset": self.offset,
                  "image_sha256": image_sha256, "format": image_format,
                  "height": height, "width": width, "source": source, "span": self.span,
                  **{attribute_key(a): attributes.get(a) for a in self.attributes}}
        for name, column in self.columns.items():
            if name != "shard":
                column.append(values[name])
        self.offset += tfrecord.framed_size(record_bytes)

    def table(self, shard_file: str) -> pa.Table:
        columns = dict(self.columns, shard=[shard_file] * len(self.columns["id"]))
        return pa.table(columns, schema=schema(self.attributes))


def write_index(path: str, table: pa.Table) -> None:
    pq.write_table(table, path, **WRITE_OPTIONS)


def load_index(url: str, version: str | None = None, *, splits=None, storage: Storage | None = None,
               cache_dir: str | None = None) -> pads.Dataset:
    """The index of the dataset at `url` (its current version, or `version`) as a
    pyarrow.dataset.Dataset: one row per record of every split (or of `splits`). Its files are
    fetched into `cache_dir` (default: the per-user cache) once, each checked against the
    manifest's sha256."""
    storage = storage or Storage()
    manifest = read_manifest(storage, url, version)
    files = [f for name, split in manifest.splits.items() if splits is None or name in splits for f in split.index]
    if not files and any(split.shards for split in manifest.splits.values()):
        raise FileNotFoundError(f"{url} ({manifest.content_id}) has no index: published before "
                                "the index existed, or with --no_index")
    folder = cache_dir or user_cache_dir("index")
    with ThreadPoolExecutor(FETCHERS) as pool:
        paths = list(pool.map(lambda f: fetched(storage, url, f, folder), files))
    attributes = manifest.label_attributes if manifest.label_attributes else {}
    return pads.dataset(paths, schema=schema(attributes), format="parquet")


def read_record(storage: Storage, url: str, version: str | None, shard: str, offset: int) -> bytes:
    """The serialized record an index row names (its `shard` and `offset`), by two ranged reads
    of the shard, never the whole file: a picture of a few records of a large dataset."""
    shard_url = join(url, version, shard) if version else join(url, shard)
    length = tfrecord.frame_length(storage.read_range(shard_url, offset, offset + tfrecord.HEADER_BYTES), shard_url)
    start = offset + tfrecord.HEADER_BYTES
    body = storage.read_range(shard_url, start, start + length + tfrecord.FOOTER_BYTES)
    return tfrecord.checked_data(body, length, shard_url)


def fetched(storage: Storage, url: str, file: IndexFile, folder: str) -> str:
    """The local copy of one index file (named by its sha256), fetched if missing, checked."""
    path = path_under(folder, f"{file.sha256[:16]}-{os.path.basename(file.file)}")
    if not os.path.exists(path):
        storage.download(join(url, file.file), path)
    digest, _ = file_digest(path)
    if digest != file.sha256:
        os.remove(path)
        raise IndexChecksumError(f"{join(url, file.file)}: sha256 {digest} is not the manifest's "
                                 f"{file.sha256}")
    return path
