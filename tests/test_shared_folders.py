"""Neighbours on one host (issue 26, items 10, 11, 13): a shard cache too small for one shard of
each split is refused instead of hanging the trainer; a cache folder is owned by one live process
(a second cache on it is refused, never allowed to empty it; a crashed owner's is taken over);
staged shards are checked against their sha256 on every reuse; the trainer's default cache is
per user and private."""
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from benchmarks.trainer_dataset import build
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.shard_cache import ShardCache
from pipeline.dataset.storage import Storage
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory) -> str:
    """Fashion-MNIST in two shards per split (train, validation, test), on local disk."""
    out = str(tmp_path_factory.mktemp("shared") / "fmnist")
    build(out, train=256, test=64, shards=2, validation=64)
    return out


def trainer(dataset, tmp_path, limit_bytes: float, *extra) -> list[str]:
    return ["trainer", "--dataset", dataset, "--checkpoint-dir", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--cache-limit-gb", f"{limit_bytes / 2**30:.9f}",
            "--memory-cache-gb", "0", "--epochs", "1", "--batch-size", "16", "--no-tensorboard",
            "--precise-bn", "0", *extra]


def test_a_cache_without_room_for_one_shard_of_each_split_is_refused_not_hung(local_dataset, tmp_path):
    # Today's check demanded room for the largest shard only: training then held its shard open
    # while validation waited for room forever (the timeout below is that hang).
    splits = read_manifest(Storage(), local_dataset).splits
    largest = max(s.bytes for split in splits.values() for s in split.shards)
    result = run_cli(trainer(local_dataset, tmp_path, 1.01 * largest), timeout=150)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "is smaller than the largest shard of each split together" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr

    together = sum(max(s.bytes for s in split.shards) for split in splits.values())
    result = run_cli(trainer(local_dataset, tmp_path, 1.01 * together), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "test accuracy" in result.stdout


def shards_of(dataset: str):
    return read_manifest(Storage(), dataset).splits["train"].shards


def test_a_second_cache_on_a_folder_is_refused_and_the_first_keeps_its_files(local_dataset, tmp_path):
    from pipeline.dataset.local_files import FolderInUse

    folder = str(tmp_path / "shards")
    first = ShardCache(Storage(), local_dataset, folder, 2**30)
    paths = list(first.paths(shards_of(local_dataset)))
    with pytest.raises(FolderInUse, match=f"{folder} is in use by process {os.getpid()}"):
        ShardCache(Storage(), local_dataset, folder, 2**30)
    assert all(os.path.exists(p) for p in paths)
    first.close()                       # its owner is done: the next one empties and owns it
    second = ShardCache(Storage(), local_dataset, folder, 2**30)
    assert os.listdir(folder) == [] and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    second.close()


def test_a_second_load_with_the_same_cache_dir_is_refused(local_dataset, tmp_path):
    from pipeline.dataset.load import load
    from pipeline.dataset.local_files import FolderInUse

    first = load(local_dataset, "test", cache_dir=str(tmp_path))
    next(iter(first))
    with pytest.raises(FolderInUse, match="is in use by process"):
        load(local_dataset, "test", cache_dir=str(tmp_path))
    assert sum(1 for _ in first) > 0               # the first reads on, its files untouched


def test_the_folder_of_a_killed_owner_is_taken_over(local_dataset, tmp_path):
    from pipeline.dataset.local_files import FolderInUse

    folder = str(tmp_path / "shards")
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from pipeline.dataset.shard_cache import ShardCache\n"
         "from pipeline.dataset.storage import Storage\n"
         f"c = ShardCache(Storage(), {local_dataset!r}, {folder!r}, 2**30)\n"
         "open(c.local_dir + '/left-behind', 'w').write('x')\n"
         "print('owned', flush=True)\n"
         "time.sleep(600)\n"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "owned"
        with pytest.raises(FolderInUse, match=f"in use by process {owner.pid}"):
            ShardCache(Storage(), local_dataset, folder, 2**30)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    cache = ShardCache(Storage(), local_dataset, folder, 2**30)
    assert os.listdir(folder) == []
    cache.close()


def test_stage_checks_a_cached_shard_on_every_reuse(local_dataset, tmp_path):
    from pipeline.dataset.reader import stage

    storage = Storage()
    manifest = read_manifest(storage, local_dataset)
    first = stage(storage, local_dataset, manifest, "train", [0], str(tmp_path))
    original = open(first[0], "rb").read()
    with open(first[0], "r+b") as f:         # what a crash, a hand or another local user leaves
        f.write(b"planted")
    again = stage(storage, local_dataset, manifest, "train", [0], str(tmp_path))
    assert again == first and open(again[0], "rb").read() == original


def test_the_trainer_caches_per_user_in_a_private_folder(tmp_path, monkeypatch):
    from trainer.config import TrainConfig
    from trainer.flags import parser

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    config = TrainConfig.from_args(parser().parse_args(["--dataset", "d", "--checkpoint-dir", "c"]))
    assert config.inputs.cache_dir == str(tmp_path / "xdg" / "image-classifier-pipeline" / "trainer")
    assert stat.S_IMODE(os.stat(config.inputs.cache_dir).st_mode) == 0o700
