"""Labels as a Parquet table (issue 27): the same dataset, byte for byte, as the same labels given
as CSV, through the S3 server; bad rows (a null key, a label outside the class list) quarantined
with their row; a missing or mistyped column refused before any image is read, in one line."""
import csv
import dataclasses
import io
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.quarantine import read_entries
from pipeline.dataset.storage import Storage
from tests.conftest import run_cli
from tests.helpers import png


def parquet_bytes(table: pa.Table, row_group_size: int) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


def in_version(splits: dict) -> dict:
    """Each split with its shards and index files named inside their version folder (whose id
    differs: the manifest names its labels file)."""
    def inside(files: list) -> list:
        return [dataclasses.replace(f, file=f.file.split("/", 1)[1]) for f in files]

    return {name: dataclasses.replace(split, shards=inside(split.shards), index=inside(split.index))
            for name, split in splits.items()}


def test_parquet_labels_publish_the_csv_labels_dataset_byte_for_byte(storage, fmnist, dataset):
    """`dataset` was ingested from labels.csv; the same rows as a Parquet table of 3 row groups,
    with the warehouse's own column names, give the same shards and statistics."""
    rows = list(csv.DictReader(io.StringIO(storage.read_text(fmnist["labels"]))))
    table = pa.table({"object_key": [r["key"] for r in rows], "class_name": [r["label"] for r in rows],
                      "assigned_split": [r["split"] or None for r in rows]})
    labels = fmnist["labels"].replace("labels.csv", "tables/labels.parquet")
    storage.write_bytes(labels, parquet_bytes(table, row_group_size=len(rows) // 3 + 1))
    output = "s3://fmnist/datasets/from-parquet"
    result = run_cli(["pipeline", "--source", fmnist["images"], "--labels_file", labels,
                      "--classes", fmnist["classes"], "--output", output, "--name", "clean",
                      "--num_readers", "2", "--splits", "train:0.8,validation:0.2",
                      "--key_column", "object_key", "--label_column", "class_name",
                      "--split_column", "assigned_split"])
    assert result.returncode == 0, result.stderr[-3000:]
    from_csv, from_parquet = read_manifest(storage, dataset), read_manifest(storage, output)
    assert in_version(from_parquet.splits) == in_version(from_csv.splits)     # files, sha256s, statistics
    assert sum(s.num_records for s in from_parquet.splits.values()) == len(rows)
    assert from_parquet.quarantine["count"] == from_csv.quarantine["count"] == 0
    assert from_parquet.source["labels"] == labels


def test_null_keys_and_unknown_labels_are_quarantined_with_their_row(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for i in range(6):
        (source / f"{i}.png").write_bytes(png(seed=i))
    table = pa.table({"key": ["0.png", "1.png", None, "3.png", "4.png", "5.png", ""],
                      "label": [0, 1, 0, 7, 1, None, 1]})         # integer labels: class names "0", "1"
    (source / "labels.parquet").write_bytes(parquet_bytes(table, row_group_size=3))
    output = str(tmp_path / "out")
    result = run_cli(["pipeline", "--source", str(source), "--output", output, "--classes", "0,1",
                      "--num_readers", "1", "--splits", "train:0.5,test:0.5"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(Storage(), output)
    labels = str(source / "labels.parquet")
    reasons = {q["id"]: q["reason"] for q in read_entries(Storage(), output, manifest.quarantine)}
    assert reasons == {
        f"{labels} row 2": "bad labels row: row 2 has no key (null or empty)",
        f"{labels} row 6": "bad labels row: row 6 has no key (null or empty)",
        "3.png": f"unknown label: '7' is not in the class list ({labels} row 3)",
        "5.png": f"missing label: the row has no label ({labels} row 5)",
        "2.png": "missing label: the image has no row in the labels file"}
    assert sum(s.num_records for s in manifest.splits.values()) == 3       # 0, 1 and 4
    assert manifest.source["labels"] == labels                               # found as <source>/labels.parquet


@pytest.mark.parametrize("columns, flags, message", [
    ({"key": ["a.png"], "class": ["cat"]}, [],
     "has no column(s) label (found: ['key', 'class']; see --key_column/--label_column)"),
    ({"key": [1], "label": ["cat"]}, [], "column 'key' is int64, expected a string"),
    ({"key": ["a.png"], "label": [0.5]}, [], "column 'label' is double, expected a string or an integer"),
    ({"path": ["a.png"], "label": ["cat"]}, ["--key_column", "file"],
     "has no column(s) file (found: ['path', 'label']; see --key_column/--label_column)"),
], ids=["no-label", "int-key", "float-label", "flag-names-a-missing-column"])
def test_a_missing_or_mistyped_column_is_one_line_before_any_image_is_read(tmp_path, columns, flags, message):
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.png").write_bytes(png())
    labels = source / "labels.parquet"
    labels.write_bytes(parquet_bytes(pa.table(columns), row_group_size=10))
    result = run_cli(["pipeline", "--source", str(source), "--output", str(tmp_path / "out"), *flags],
                     timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"pipeline: error: labels file {labels} {message}"
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_a_file_that_is_not_parquet_is_one_line(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.png").write_bytes(png())
    (source / "labels.parquet").write_text("key,label\na.png,cat\n")
    result = run_cli(["pipeline", "--source", str(source), "--output", str(tmp_path / "out")], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"pipeline: error: labels file {source / 'labels.parquet'} is not a Parquet file: ")


@pytest.mark.parametrize("rows", [10**6])
def test_a_million_row_table_is_read_by_the_workers_in_bounded_memory(storage, rows):
    """The read of the labels alone (benchmarks/labels_read.py) on 2 workers, from the S3 server,
    at rows/10 and at rows in row groups of 100,000: each worker holds a row group's batch at a
    time, so its peak RSS stays about flat while the table grows 10x (measured as
    benchmarks/ingest_scale.py does). A worker reading the whole table would grow with it."""
    from benchmarks.ingest_scale import PARQUET_ROW_GROUP, watched, write_parquet_labels

    storage.ensure_bucket("s3://tables")
    peaks = {}
    for count in (rows // 10, rows):
        local = f"/tmp/labels-{os.getpid()}-{count}.parquet"
        write_parquet_labels(local, count, bad=count // 100)
        url = f"s3://tables/labels-{count}.parquet"
        storage.upload(local, url)
        os.remove(local)
        _, out, _, workers = watched([sys.executable, "-m", "benchmarks.labels_read", url, "--workers", "2"])
        assert f"rows {count}\n" in out and "bad 0\n" in out, out[-2000:]
        assert len(workers) >= 2 and pq_row_groups(storage, url) == count // PARQUET_ROW_GROUP
        peaks[count] = workers[0]
    growth = peaks[rows] / peaks[rows // 10]
    print(f"largest worker's peak RSS: {peaks[rows // 10] / 2**20:.0f} MiB at {rows // 10:,} rows, "
          f"{peaks[rows] / 2**20:.0f} MiB at {rows:,} ({growth:.2f}x)")
    assert growth < 1.5, peaks


def pq_row_groups(storage, url) -> int:
    from pipeline.sources.parquet_labels import open_table

    return open_table(storage, url).metadata.num_row_groups
