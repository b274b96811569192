"""Names that come from a bucket never become paths outside their local folder (issue 26, item 3):
a manifest's shard names and sha256s (reader.stage, the ShardCache), a checkpoint marker's file
names and a SavedModel's keys (warm start). Against the real S3 server. A server that refuses
keys with `..` segments (SeaweedFS; AWS S3 accepts them) still stores a manifest or a marker
that names one, which is the route every test here also takes."""
import hashlib
import json
import os

import pytest

from pipeline.dataset.local_paths import UnsafeName
from pipeline.dataset.manifest import Manifest, Shard, Split, write_manifest
from pipeline.dataset.reader import stage
from pipeline.dataset.shard_cache import ShardCache
from pipeline.dataset.storage import StorageError, join

BUCKET = "s3://untrusted-names"
DATA = b"shard bytes"
SHA = hashlib.sha256(DATA).hexdigest()


def files_under(folder) -> set[str]:
    return {os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files}


def publish(storage, url: str, shard: Shard) -> str:
    storage.ensure_bucket(url)
    storage.write_bytes(join(url, "ok-train.tfrecord-00000-of-00001"), DATA)
    manifest = Manifest(name="names", classes=["a"], image_shape=[1, 1, 1],
                        splits={"train": Split([shard], [1])}, quarantine={"count": 0, "by_reason": {}},
                        source={})
    write_manifest(storage, url, manifest)
    return url


@pytest.mark.parametrize("shard", [
    Shard("v/../../../escaped", 1, len(DATA), SHA),                             # the file name leaves
    Shard("ok-train.tfrecord-00000-of-00001", 1, len(DATA), "../../../../../x"),  # the sha256 does
], ids=["file", "sha256"])
def test_a_manifest_naming_a_path_outside_is_refused_by_stage(storage, tmp_path, shard):
    url = publish(storage, f"{BUCKET}/stage-{shard.sha256[:2]}", shard)
    from pipeline.dataset.manifest import read_manifest
    cache = tmp_path / "deep" / "er" / "cache"
    with pytest.raises(UnsafeName, match="refusing remote name|not 64 hex digits"):
        stage(storage, url, read_manifest(storage, url), "train", [0], str(cache))
    assert files_under(tmp_path) == set(), files_under(tmp_path)        # nothing written anywhere


def test_a_manifest_sha256_that_leaves_the_cache_is_refused_before_any_fetch(storage, tmp_path):
    url = publish(storage, f"{BUCKET}/cache", Shard("ok", 1, len(DATA), SHA))
    evil = Shard("ok-train.tfrecord-00000-of-00001", 1, len(DATA), "../../../../../x")
    cache = ShardCache(storage, url, str(tmp_path / "a" / "b" / "cache"), 2**20,
                       on_event=lambda *event: pytest.fail(f"fetched: {event}"))
    with pytest.raises(UnsafeName, match="not 64 hex digits"):
        list(cache.paths([evil]))
    assert files_under(tmp_path) <= {"a/b/.cache.owner"}, files_under(tmp_path)   # its owner's lock


def checkpoint_with_marker(storage, url: str, name: str) -> None:
    """A committed checkpoint (a real tf.train.Checkpoint of our cnn) whose marker also names
    `name` as one of its files, with that object stored at the key the marker implies."""
    import tensorflow as tf

    from pipeline.dataset.local_files import file_digest
    from trainer.model.models import build_model

    local = f"/tmp/ckpt-{os.getpid()}"
    tf.train.Checkpoint(model=build_model("cnn", (28, 28, 1), 10)).write(os.path.join(local, "ckpt"))
    files = []
    for f in sorted(os.listdir(local)):
        storage.upload(os.path.join(local, f), join(url, "ckpt-00000001", f))
        digest, size = file_digest(os.path.join(local, f))
        files.append({"name": f, "bytes": size, "sha256": digest})
    try:
        storage.write_bytes(join(url, "ckpt-00000001", name), b"planted")
    except StorageError:
        pass                          # a server that refuses `..` keys: the marker still names it
    files.append({"name": name, "bytes": 7, "sha256": hashlib.sha256(b"planted").hexdigest()})
    marker = {"step": 1, "files": files, "model": "cnn", "image_shape": [28, 28, 1],
              "classes": [str(i) for i in range(10)]}
    storage.write_text(join(url, "ckpt-00000001", "COMMITTED"), json.dumps(marker))


def test_warm_start_from_a_checkpoint_whose_marker_names_a_path_outside(storage, tmp_path):
    from trainer.state.warmstart import load_source

    url = f"{BUCKET}/runs/marker"
    storage.ensure_bucket(url)
    checkpoint_with_marker(storage, url, "../../../../escaped")
    local = tmp_path / "x" / "y" / "warmstart"
    with pytest.raises(IOError, match="damaged: refusing remote name '../../../../escaped'"):
        load_source(storage, url, str(local))
    assert not [f for f in files_under(tmp_path) if "escaped" in f], files_under(tmp_path)


def test_warm_start_from_a_savedmodel_with_a_key_outside(storage, tmp_path):
    from trainer.keras import keras
    from trainer.state.warmstart import load_source

    url = f"{BUCKET}/runs/savedmodel"
    storage.ensure_bucket(url)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
    model.save(str(tmp_path / "sm"), save_format="tf")
    for root, _, files in os.walk(tmp_path / "sm"):
        for f in files:
            storage.upload(os.path.join(root, f), join(url, os.path.relpath(os.path.join(root, f), tmp_path / "sm")))
    try:
        storage.write_bytes(join(url, "variables/../../../../escaped"), b"planted")
    except StorageError:
        pytest.skip("this S3 server refuses keys with `..` segments (the marker and manifest tests "
                    "cover the same defence)")
    local = tmp_path / "x" / "y" / "warmstart"
    with pytest.raises(UnsafeName, match="refusing remote name 'variables/../../../../escaped'"):
        load_source(storage, url, str(local))
    assert not [f for f in files_under(tmp_path) if "escaped" in f], files_under(tmp_path)
