"""The real Beam job (DirectRunner, 2 worker processes) against the real S3 server."""
import json

import tensorflow as tf

from pipeline.dataset import records
from pipeline.dataset.local_files import file_digest
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.quarantine import read_entries
from pipeline.dataset.storage import join
from tests.conftest import IMAGES_PER_SPLIT, run_cli
from tests.helpers import png

BAD_OBJECTS = {  # key under the images prefix -> (bytes or None for "no object", reason kind)
    "bad/truncated.png": (png(64, 64, 1, seed=3)[:150], "corrupt image"),
    "bad/empty.png": (b"", "empty object (0 bytes)"),
    "bad/notes.png": (b"these are not the pixels you are looking for", "not an image (unrecognised bytes)"),
    "bad/unknown-label.png": (png(28, 28, 1, seed=4), "unknown label"),
    "bad/no-label.png": (png(28, 28, 1, seed=5), "missing label"),
    "bad/ghost.png": (None, "no image"),
}


def make_dirty_source(storage, fmnist) -> dict:
    """The clean images plus one object (or label row) for every kind of bad input."""
    root = "s3://fmnist/dirty"
    for url, _ in storage.list(fmnist["images"]):
        key = url[len(fmnist["images"]) + 1:]
        storage.write_bytes(join(root, "images", key), storage.read_bytes(url))
    rows = storage.read_text(fmnist["labels"])
    for key, (data, _) in BAD_OBJECTS.items():
        if data is not None:
            storage.write_bytes(join(root, "images", key), data)
        if key != "bad/no-label.png":
            label = "Spaceship" if key == "bad/unknown-label.png" else "Coat"
            rows += f"{key},{label},\n"
    storage.write_text(join(root, "labels.csv"), rows)
    return {"images": join(root, "images"), "labels": join(root, "labels.csv")}


def read_shards(storage, dataset_url, manifest, tmp_path):
    """All records of all splits: {split: [ImageRecord]}, checking each shard against the manifest."""
    found = {}
    for split, info in manifest.splits.items():
        found[split] = []
        for shard in info.shards:
            local = tmp_path / shard.file
            storage.download(join(dataset_url, shard.file), str(local))
            assert file_digest(str(local))[0] == shard.sha256, shard.file
            assert local.stat().st_size == shard.bytes
            parsed = [records.decode_example(r.numpy()) for r in tf.data.TFRecordDataset(str(local))]
            assert len(parsed) == shard.records, shard.file
            found[split] += parsed
    return found


def test_every_good_image_lands_in_exactly_one_split_and_bad_ones_are_quarantined(
        storage, fmnist, tmp_path):
    source = make_dirty_source(storage, fmnist)
    output = "s3://fmnist/datasets/dirty"
    result = run_cli(["pipeline", "--source", source["images"], "--labels_file", source["labels"],
                      "--classes", fmnist["classes"], "--output", output, "--num_readers", "2",
                      "--splits", "train:0.8,validation:0.2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "published dirty" in result.stdout and "quarantined 6" in result.stdout

    manifest = read_manifest(storage, output)
    found = read_shards(storage, output, manifest, tmp_path)
    ids = [r.id for split in found.values() for r in split]
    expected = {f"{s}/{i:05d}.png" for s in ("train", "test") for i in range(IMAGES_PER_SPLIT)}
    assert len(ids) == len(set(ids)) == len(expected)          # once each, nothing extra
    assert set(ids) == expected
    assert {r.id for r in found["test"]} == {i for i in expected if i.startswith("test/")}
    assert found["validation"] and found["train"]              # hash split carved validation
    assert all(r.label == manifest.classes.index(r.label_name) for r in found["train"])
    assert manifest.image_shape == [28, 28, 1]
    for split, info in manifest.splits.items():
        assert sum(info.class_counts) == info.num_records == len(found[split])

    assert manifest.quarantine["files"] == [f"{manifest.version}/quarantine-00000-of-00001.jsonl"]
    quarantined = list(read_entries(storage, output, manifest.quarantine))
    assert {q["id"] for q in quarantined} == set(BAD_OBJECTS)
    for q in quarantined:
        assert q["reason"].startswith(BAD_OBJECTS[q["id"]][1]), q
    assert manifest.quarantine["count"] == len(BAD_OBJECTS)
    leftovers = [u for u, _ in storage.list(output) if "/.staging-" in u]
    assert leftovers == []


def test_publishing_again_is_refused_without_overwrite(dataset, fmnist):
    result = run_cli(["pipeline", "--source", fmnist["images"], "--labels_file", fmnist["labels"],
                      "--classes", fmnist["classes"], "--output", dataset, "--num_readers", "2",
                      "--splits", "train:0.5,validation:0.5"])                    # another input
    assert result.returncode == 2
    assert "already published" in result.stderr and "--overwrite" in result.stderr


def test_the_same_input_again_publishes_nothing_and_says_so(storage, dataset, fmnist):
    """As the session fixture ingested it (tests/conftest.py): found by its fingerprint."""
    before = storage.read_text(f"{dataset}/manifest.json")
    result = run_cli(["pipeline", "--source", fmnist["images"], "--labels_file", fmnist["labels"],
                      "--classes", fmnist["classes"], "--output", dataset, "--num_readers", "2",
                      "--splits", "train:0.8,validation:0.2"])
    assert result.returncode == 0, result.stderr[-2000:]
    version = read_manifest(storage, dataset).version
    assert f"{dataset} already holds {version}" in result.stdout and "nothing to do" in result.stdout
    assert storage.read_text(f"{dataset}/manifest.json") == before


def test_local_directories_work_as_source_and_output(tmp_path):
    source = tmp_path / "images"
    (source / "a").mkdir(parents=True)
    for i in range(12):
        (source / "a" / f"{i}.png").write_bytes(png(8, 8, 3, seed=i))
    (tmp_path / "labels.csv").write_text(
        "key,label\n" + "".join(f"a/{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(12)))
    output = tmp_path / "out" / "pets"
    result = run_cli(["pipeline", "--source", str(source), "--labels_file", str(tmp_path / "labels.csv"),
                      "--output", str(output), "--num_readers", "1", "--direct_num_workers", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["classes"] == ["cat", "dog"]          # inferred, sorted
    assert sum(s["num_records"] for s in manifest["splits"].values()) == 12
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            assert (output / shard["file"]).stat().st_size == shard["bytes"]
