"""Every source layout, dedupe, determinism, spans and a killed run: the real Beam job
(DirectRunner, 2 worker processes) against real objects in the S3 server."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.quarantine import read_entries
from pipeline.dataset.storage import join
from tests.conftest import ROOT, run_cli
from tests.helpers import jpeg, png, png_header_only
from tests.test_ingest import read_shards

IMAGES = 40


@pytest.fixture(scope="module")
def labelled(storage, fmnist) -> dict[str, tuple[str, bytes]]:
    """The first 40 real Fashion-MNIST train images: {key: (class name, PNG bytes)}."""
    storage.ensure_bucket("s3://layouts")
    rows = csv.DictReader(io.StringIO(storage.read_text(fmnist["labels"])))
    chosen = [r for r in rows if r["key"].startswith("train/")][:IMAGES]
    return {r["key"]: (r["label"], storage.read_bytes(join(fmnist["images"], r["key"]))) for r in chosen}


def ingest(source, output, *extra):
    result = run_cli(["pipeline", "--source", source, "--output", output, "--num_readers", "2",
                      "--splits", "train:0.75,test:0.25", *extra])
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def quarantined(storage, output) -> dict[str, str]:
    manifest = read_manifest(storage, output)
    assert manifest.quarantine["files"] == [f"{manifest.version}/quarantine-00000-of-00001.jsonl"]
    return {q["id"]: q["reason"] for q in read_entries(storage, output, manifest.quarantine)}


BAD_FILES = {  # folder layout: key -> (bytes, reason the quarantine must give)
    "Coat/truncated.png": (png(64, 64, 1, seed=3)[:150], "corrupt image"),
    "Coat/truncated.jpg": (jpeg(64, 64)[:300], "corrupt image"),
    "Coat/empty.png": (b"", "empty object (0 bytes)"),
    "Coat/readme.txt": (b"not pixels at all", "not an image"),
    "Coat/bomb.png": (png_header_only(20000, 20000), "too many pixels"),
    "stray.png": (png(28, 28, 1, seed=9), "missing label"),
}


def test_folder_per_class_with_bad_files_and_duplicates_is_deterministic(storage, labelled, tmp_path):
    root = "s3://layouts/folders"
    for key, (label, data) in labelled.items():
        storage.write_bytes(join(root, label, os.path.basename(key)), data)
    first_key, (first_label, first_bytes) = next(iter(labelled.items()))
    storage.write_bytes(join(root, first_label, "zz-copy.png"), first_bytes)  # same bytes, new id
    for key, (data, _) in BAD_FILES.items():
        storage.write_bytes(join(root, key), data)

    ingest(root, "s3://layouts/out/one", "--name", "fm")
    ingest(root, "s3://layouts/out/two", "--name", "fm")

    one = read_manifest(storage, "s3://layouts/out/one")
    two = read_manifest(storage, "s3://layouts/out/two")
    assert one.to_json() == two.to_json()          # byte-identical manifests: same shard sha256s
    records = [r for split in read_shards(storage, "s3://layouts/out/one", one, tmp_path).values()
               for r in split]
    expected = {f"{label}/{os.path.basename(key)}" for key, (label, _) in labelled.items()}
    assert sorted(r.id for r in records) == sorted(expected)     # each once; the copy dropped
    assert all(one.classes[r.label] == r.id.split("/")[0] == r.label_name for r in records)

    bad = quarantined(storage, "s3://layouts/out/one")
    assert bad.pop(f"{first_label}/zz-copy.png").startswith(
        f"duplicate: the same image bytes as {first_label}/{os.path.basename(first_key)}")
    assert set(bad) == set(BAD_FILES)
    for key, reason in bad.items():
        assert reason.startswith(BAD_FILES[key][1]), (key, reason)
    assert one.duplicates == 1 and one.quarantine["count"] == len(BAD_FILES) + 1
    train = one.splits["train"]
    assert len(train.pixel_mean) == len(train.pixel_std) == 1 and 0.1 < train.pixel_mean[0] < 0.6


def test_jsonl_labels_with_split_column_and_a_span(storage, labelled):
    span = "2026-11-23"
    raw = f"s3://layouts/daily/{span}"
    lines = []
    for i, (key, (label, data)) in enumerate(labelled.items()):
        storage.write_bytes(join(raw, "images", key), data)
        row = {"key": key, "label": label, "source_camera": "ignored extra column"}
        if i % 10 == 0:
            row["split"] = "validation"
        lines.append(json.dumps(row))
    storage.write_text(join(raw, "labels.jsonl"), "\n".join(lines) + "\n")

    ingest("s3://layouts/daily/{span}/images", "s3://layouts/datasets/fm", "--span", span,
           "--labels_file", "s3://layouts/daily/{span}/labels.jsonl")
    manifest = read_manifest(storage, f"s3://layouts/datasets/fm/{span}")
    assert manifest.name == "fm" and manifest.source["span"] == span
    assert manifest.splits["validation"].num_records == len(list(labelled)[::10])
    assert sum(s.num_records for s in manifest.splits.values()) == IMAGES


def test_attribute_files_become_one_label_each(storage, tmp_path):
    root = "s3://layouts/cartoons"
    for i in range(24):
        storage.write_bytes(join(root, f"cs{i:03d}.png"), png(20, 20, 4, seed=i))   # RGBA
        storage.write_text(join(root, f"cs{i:03d}.csv"),
                           f'"eye_color", {i % 3}, 3\n"hair", {i % 5}, 10\n')
    storage.write_bytes(join(root, "bad-value.png"), png(20, 20, 4, seed=99))
    storage.write_text(join(root, "bad-value.csv"), '"eye_color", 7, 3\n"hair", 1, 10\n')
    storage.write_bytes(join(root, "no-file.png"), png(20, 20, 4, seed=98))

    ingest(root, "s3://layouts/out/cartoons", "--label_attribute", "hair", "--channels", "3",
           "--resize", "16x16")
    manifest = read_manifest(storage, "s3://layouts/out/cartoons")
    assert manifest.label_attributes == {"eye_color": ["0", "1", "2"],
                                         "hair": [str(v) for v in range(10)]}
    assert manifest.classes == manifest.label_attributes["hair"]
    assert manifest.image_shape == [16, 16, 3]
    records = [r for split in read_shards(storage, "s3://layouts/out/cartoons", manifest,
                                          tmp_path).values() for r in split]
    assert len(records) == 24
    for r in records:
        i = int(r.id[2:5])
        assert r.attributes == {"eye_color": i % 3, "hair": i % 5} and r.label == i % 5
        assert (r.image_format, r.channels, r.height) == ("png", 3, 16)
    counts = {a: [sum(s.attribute_counts[a][v] for s in manifest.splits.values()) for v in range(n)]
              for a, n in (("eye_color", 3), ("hair", 10))}
    assert counts["eye_color"] == [8, 8, 8] and counts["hair"][:5] == [5, 5, 5, 5, 4]
    bad = quarantined(storage, "s3://layouts/out/cartoons")
    assert bad["bad-value.png"].startswith("bad attribute file: eye_color = 7 is outside 0..2")
    assert bad["no-file.png"].startswith("bad attribute file: no attribute file")


def test_new_data_never_moves_an_old_image_between_splits(storage, labelled):
    root = "s3://layouts/growing"
    keys = list(labelled)
    for key in keys[:20]:
        storage.write_bytes(join(root, labelled[key][0], os.path.basename(key)), labelled[key][1])
    ingest(root, "s3://layouts/out/growing-1")
    for key in keys[20:]:
        storage.write_bytes(join(root, labelled[key][0], os.path.basename(key)), labelled[key][1])
    ingest(root, "s3://layouts/out/growing-2")

    def split_of(output):
        found = {}
        manifest = read_manifest(storage, output)
        for split, info in manifest.splits.items():
            for shard in info.shards:
                found.update({i: split for i in shard_ids(storage, join(output, shard.file))})
        return found
    before, after = split_of("s3://layouts/out/growing-1"), split_of("s3://layouts/out/growing-2")
    assert len(before) == 20 and len(after) == IMAGES
    assert all(after[i] == split for i, split in before.items())


def shard_ids(storage, url):
    import tensorflow as tf
    from pipeline.dataset import records

    data = storage.read_bytes(url)
    path = f"/tmp/shard-ids-{os.getpid()}"
    with open(path, "wb") as f:
        f.write(data)
    ids = [records.decode_example(r.numpy()).id for r in tf.data.TFRecordDataset(path)]
    os.remove(path)
    return ids


def test_a_killed_run_publishes_nothing_and_a_rerun_succeeds(storage, fmnist):
    output = "s3://layouts/out/killed"
    command = [sys.executable, "-m", "pipeline", "--source", fmnist["images"], "--labels_file",
               fmnist["labels"], "--output", output, "--num_readers", "2", "--fetch_threads", "1"]
    job = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not any("/.staging-" in url for url, _ in storage.list(output)):   # shards being written
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before it wrote"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)        # the launcher and its worker processes
    job.wait()
    assert not storage.exists(join(output, "manifest.json"))
    result = run_cli(["pipeline", "--source", fmnist["images"], "--labels_file", fmnist["labels"],
                      "--output", output, "--num_readers", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    # Its lease (10 minutes by default) is still live: named, left alone, not reused.
    assert "another run is writing into this output now (its lease is live); left alone" in result.stderr
    assert sum(s.num_records for s in read_manifest(storage, output).splits.values()) == 300
