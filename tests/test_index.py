"""The Parquet index of a dataset version (issue 27): one row per record, consistent with the
shards (each (shard, record) holds that id and image sha256, and its offset reads it alone), byte-identical whatever the number
of workers, renumbered where dedupe rewrote a shard, and retired with its version."""
import hashlib
import io
import os

import pyarrow.compute as pc
import pytest

from pipeline.dataset import load_index, records, tfrecord
from pipeline.dataset.index import read_record
from pipeline.dataset.manifest import DatasetNotFound, read_manifest
from pipeline.dataset.storage import Storage, join
from tests.conftest import run_cli
from tests.helpers import png


def shard_records(storage, url: str) -> list:
    return list(tfrecord.read_records(io.BytesIO(storage.read_bytes(url)), url))


def assert_consistent(storage, url: str, cache_dir) -> None:
    """Every index row names a record that holds its id and image sha256, and every record has
    one row."""
    manifest = read_manifest(storage, url)
    table = load_index(url, storage=storage, cache_dir=str(cache_dir)).to_table()
    assert table.num_rows == sum(s.num_records for s in manifest.splits.values())
    assert len(set(table.column("id").to_pylist())) == table.num_rows
    rows = {(r["shard"], r["record"]): r for r in table.to_pylist()}
    for split, info in manifest.splits.items():
        for shard in info.shards:
            name = shard.file.split("/", 1)[1]                  # relative to the version folder
            for number, raw in enumerate(shard_records(storage, join(url, shard.file))):
                row, record = rows.pop((name, number)), records.decode_example(raw)
                assert read_record(storage, url, manifest.version, name, row["offset"]) == raw
                assert (row["id"], row["split"], row["label"], row["label_name"]) == (
                    record.id, split, record.label, manifest.classes[record.label])
                assert row["image_sha256"] == hashlib.sha256(record.image).hexdigest()
                assert (row["format"], row["height"], row["width"]) == (
                    record.image_format, record.height, record.width)
    assert not rows


def index_files(storage, url: str) -> list[tuple[str, str]]:
    manifest = read_manifest(storage, url)
    return [(f.file.split("/", 1)[1], f.sha256) for s in manifest.splits.values() for f in s.index]


def test_the_index_has_one_row_per_record_consistent_with_the_shards(storage, fmnist, dataset, tmp_path):
    assert_consistent(storage, dataset, tmp_path / "cache")
    table = load_index(dataset, storage=storage, cache_dir=str(tmp_path / "cache")).to_table()
    row = table.filter(pc.field("id") == "test/00007.png").to_pylist()[0]
    assert row["source"] == f"{fmnist['images']}/test/00007.png" and row["span"] is None
    assert [f for f, _ in index_files(storage, dataset)][:2] == [
        "index-test-00000-of-00002.parquet", "index-test-00001-of-00002.parquet"]


def test_the_index_is_byte_identical_whatever_the_number_of_workers(storage, fmnist, dataset):
    """`dataset` was written by 2 workers; one worker writes the same index files."""
    output = "s3://fmnist/datasets/one-worker"
    result = run_cli(["pipeline", "--source", fmnist["images"], "--labels_file", fmnist["labels"],
                      "--classes", fmnist["classes"], "--output", output, "--name", "clean",
                      "--num_readers", "2", "--splits", "train:0.8,validation:0.2", "--direct_num_workers", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert index_files(storage, output) == index_files(storage, dataset) and index_files(storage, dataset)


def test_a_deduped_shard_is_renumbered_and_the_index_is_retired_with_its_version(tmp_path):
    """Copies of one image under several ids: dedupe rewrites their shards, the index follows.
    A second version (--overwrite, --keep_versions 1) retires the first one's index files."""
    storage, source, output = Storage(), tmp_path / "source", str(tmp_path / "out")
    for i in range(12):
        folder = source / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:02d}.png").write_bytes(png(8, 8, seed=i % 9))          # 9..11 copy 0..2
    flags = ["--source", str(source), "--output", output, "--num_readers", "2", "--span", "night-1",
             "--splits", "train:0.5,test:0.5", "--direct_num_workers", "1"]
    result = run_cli(["pipeline", *flags], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = join(output, "night-1")
    first = read_manifest(storage, dataset)
    assert first.duplicates == 3
    assert_consistent(storage, dataset, tmp_path / "cache")
    table = load_index(dataset, cache_dir=str(tmp_path / "cache")).to_table()
    assert set(table.column("span").to_pylist()) == {"night-1"}
    assert all(s.startswith(str(source)) for s in table.column("source").to_pylist())
    (source / "cat" / "99.png").write_bytes(png(8, 8, seed=99))
    result = run_cli(["pipeline", *flags, "--overwrite", "--keep_versions", "1"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    old_files = [f.file for s in first.splits.values() for f in s.index]
    assert old_files and not any(os.path.exists(os.path.join(dataset, f)) for f in old_files)
    with pytest.raises(DatasetNotFound, match="retired"):
        load_index(dataset, version=first.version, cache_dir=str(tmp_path / "cache"))
    assert load_index(dataset, cache_dir=str(tmp_path / "cache")).count_rows() == 10


def test_no_index_publishes_none_and_load_index_says_so(tmp_path):
    source = tmp_path / "source" / "cat"
    source.mkdir(parents=True)
    for i in range(3):
        (source / f"{i}.png").write_bytes(png(8, 8, seed=i))
    output = str(tmp_path / "out")
    result = run_cli(["pipeline", "--source", str(tmp_path / "source"), "--output", output, "--num_readers", "1",
                      "--no_index", "--direct_num_workers", "1"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [name for _, _, names in os.walk(output) for name in names if name.startswith("index-")]
    manifest = read_manifest(Storage(), output)
    assert all(not s.index for s in manifest.splits.values())
    with pytest.raises(FileNotFoundError, match="has no index: published before the index existed, or with --no_index"):
        load_index(output)
