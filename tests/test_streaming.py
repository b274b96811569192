"""Shards streamed instead of staged (issue 12): the ShardCache against the real S3 server
(reading starts before the last shard is local, never more than the limit on disk, a share that
fits is fetched once, a corrupt shard named), and the trainer under a real horovodrun -np 2 with
a disk limit of two shards per rank and no in-memory cache, so every epoch reads its files in a
new order: the limit holds throughout, and a run killed mid-epoch and resumed ends with the
weights of an uninterrupted one."""
import hashlib
import os
import re
import threading
import time

import numpy as np
import pytest

from benchmarks.trainer_dataset import build
from pipeline.dataset.manifest import Shard, read_manifest
from pipeline.dataset.shard_cache import CacheTooSmall, ShardCache, ShardChecksumError
from pipeline.dataset.storage import join
from tests.conftest import run_cli
from tests.helpers import kill_rank_when

URL = "s3://streaming/shards"


@pytest.fixture(scope="module")
def shards(storage) -> list[Shard]:
    """Eight 64 KiB files of random bytes in the S3 server (the cache does not look inside)."""
    storage.ensure_bucket(URL)
    made = []
    for i in range(8):
        data = np.random.default_rng(i).bytes(64 * 1024)
        storage.write_bytes(join(URL, f"part-{i}"), data)
        made.append(Shard(f"part-{i}", 1, len(data), hashlib.sha256(data).hexdigest()))
    return made


def disk_bytes(folder) -> int:
    total = 0
    for name in os.listdir(folder):
        try:
            total += os.path.getsize(os.path.join(folder, name))
        except OSError:             # an incoming file renamed between the listing and the stat
            pass
    return total


def test_reading_starts_before_the_last_shard_is_local_and_stays_within_the_limit(storage, shards, tmp_path):
    events, on_disk = [], []
    cache = ShardCache(storage, URL, str(tmp_path), limit_bytes=3 * 64 * 1024,
                       on_event=lambda *event: (events.append(event), on_disk.append(disk_bytes(tmp_path))))
    for path, shard in zip(cache.paths(shards), shards):
        events.append(("read", shard.file))
        on_disk.append(disk_bytes(tmp_path))
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() == shard.sha256
    assert events.index(("read", "part-0")) < events.index(("fetched", "part-7"))
    assert [e for e in events if e[0] == "read"] == [("read", s.file) for s in shards]
    assert ("evicted", "part-0") in events and max(on_disk) <= 3 * 64 * 1024, on_disk


def test_a_share_that_fits_is_fetched_once(storage, shards, tmp_path):
    events = []
    cache = ShardCache(storage, URL, str(tmp_path), limit_bytes=2**30, on_event=lambda *e: events.append(e))
    first, again = list(cache.paths(shards)), list(cache.paths(shards[::-1]))
    assert first == again[::-1] and all(os.path.exists(p) for p in first)
    assert sorted(events) == sorted(("fetched", s.file) for s in shards)


def test_a_corrupt_shard_and_too_small_a_limit_are_named(storage, shards, tmp_path):
    wrong = Shard("part-0", 1, shards[0].bytes, "0" * 64)
    with pytest.raises(ShardChecksumError, match=f"{URL}/part-0: sha256 differs"):
        list(ShardCache(storage, URL, str(tmp_path / "a"), 2**30).paths([wrong]))
    with pytest.raises(CacheTooSmall, match="part-0 is 0.00 GiB, more than the cache limit.*--cache-limit-gb"):
        list(ShardCache(storage, URL, str(tmp_path / "b"), 1000).paths(shards))


# -- the trainer -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(storage, tmp_path_factory) -> tuple[str, int]:
    """1,024 train and 64 test Fashion-MNIST images in 8 shards per split, in the S3 server;
    returns its URL and the largest training shard's size."""
    local = str(tmp_path_factory.mktemp("streaming") / "fmnist")
    build(local, train=1024, test=64, shards=8)
    url = "s3://streaming/datasets/fmnist"
    storage.ensure_bucket(url)
    for name in os.listdir(local):
        storage.upload(os.path.join(local, name), join(url, name))
    return url, max(s.bytes for s in read_manifest(storage, url).splits["train"].shards)


def horovod(dataset, checkpoints, cache, limit_gb, *extra):
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-u", "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", "3", "--batch-size", "16",
            "--cache-dir", str(cache), "--cache-limit-gb", f"{limit_gb:.9f}", "--memory-cache-gb", "0",
            "--augment", "on", "--checkpoint-every", "10", "--no-tensorboard", "--precise-bn", "4", *extra]


def watch(folder, seen: list, stop: threading.Event):
    """Polls every 10 ms: the bytes of shard files in the fullest rank's folder under `folder`."""
    while not stop.is_set():
        by_rank = {}
        for root, _, files in os.walk(folder):
            if root.endswith("/shards"):
                for f in files:
                    try:
                        by_rank[root] = by_rank.get(root, 0) + os.path.getsize(os.path.join(root, f))
                    except OSError:                 # removed between the listing and the stat
                        pass
        seen.append(max(by_rank.values(), default=0))
        time.sleep(0.01)


def digest(output: str, rank: int) -> str:
    return re.search(rf"rank {rank} weights sha256 ([0-9a-f]+)", output).group(1)


@pytest.mark.slow        # minutes of end-to-end training: `make test-all` runs it (README)
def test_the_trainer_streams_within_the_limit_and_resumes_exactly(storage, dataset, tmp_path):
    url, largest = dataset
    limit_gb = 2 * largest / 2**30              # two of its four shards per rank
    checkpoints = "s3://streaming/runs/killed"
    seen, stop = [], threading.Event()
    watcher = threading.Thread(target=watch, args=(tmp_path / "a", seen, stop), daemon=True)
    watcher.start()
    try:
        killed, output = kill_rank_when(horovod(url, checkpoints, tmp_path / "a", limit_gb, "--log-every", "0.2"),
                                        checkpoints, lambda lines: any("epoch 2/3 step" in line for line in lines))
        assert killed != 0, output[-3000:]
        resumed = run_cli(horovod(url, checkpoints, tmp_path / "a", limit_gb), timeout=600)
    finally:
        stop.set()
        watcher.join()
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert re.search(r"resumed from \S+: epoch \d, \d+ of 32 batches done", resumed.stdout), resumed.stdout[-3000:]
    assert 0 < max(seen) <= 2 * largest, max(seen)          # each rank within its limit, all the time
    whole = run_cli(horovod(url, "s3://streaming/runs/whole", tmp_path / "b", limit_gb), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert digest(resumed.stdout, 0) == digest(whole.stdout, 0) == digest(resumed.stdout, 1)


def test_each_epoch_reads_the_files_in_its_own_order(storage, shards, tmp_path):
    from pipeline.dataset.reader import RankShare

    share = RankShare(shards, None, len(shards), ShardCache(storage, URL, str(tmp_path), 2**30))
    def names(epoch):
        return [os.path.basename(p).split("-", 1)[1] for p in share.local_paths(epoch, seed=3)]
    assert names(-1) == [s.file for s in shards]                        # manifest order
    assert names(0) == names(0) and sorted(names(0)) == sorted(names(1)) and names(0) != names(1)


def test_load_returns_a_fixed_size_split_as_stored(storage, dataset, tmp_path):
    import io

    from PIL import Image

    from pipeline.dataset import records, tfrecord
    from pipeline.dataset.load import load

    url, _ = dataset
    manifest = read_manifest(storage, url)
    stored = {}
    for shard in manifest.splits["test"].shards:
        for r in tfrecord.read_records(io.BytesIO(storage.read_bytes(join(url, shard.file)))):
            record = records.decode_example(r)
            pixels = np.asarray(Image.open(io.BytesIO(record.image)))
            stored[record.label] = stored.get(record.label, []) + [pixels]
    loaded = list(load(url, "test", cache_dir=str(tmp_path)))
    assert len(loaded) == manifest.splits["test"].num_records
    for image, label in loaded:
        assert image.shape == (28, 28, 1)
        assert any(np.array_equal(np.round(image.numpy()[..., 0] * 255), p) for p in stored[int(label)])
