"""The reader side every consumer of a dataset needs: which shard files of a split one rank
(of `size`) reads, and how they reach local disk, checked against the manifest's sha256:
streamed through a bounded ShardCache (shard_cache.py: reading starts once the first file is
local), or all staged at once (`stage`, for tools and tests).

Ranks read whole files when there are at least as many files as ranks; otherwise every rank
reads all files and keeps every size-th record (`shard_records`). No TensorFlow here: the
trainer builds its tf.data pipeline on the local paths."""
from __future__ import annotations

import dataclasses
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor

from pipeline.dataset.local_files import file_digest
from pipeline.dataset.local_paths import path_under
from pipeline.dataset.manifest import Manifest, Shard
from pipeline.dataset.shard_cache import ShardCache, ShardChecksumError, local_name
from pipeline.dataset.storage import Storage, join

__all__ = ["RankShare", "ShardChecksumError", "files_for_rank", "rank_share", "stage"]

STAGING_THREADS = 8


@dataclasses.dataclass(frozen=True)
class RankShare:
    """One rank's part of a split."""
    shards: list[Shard]                       # its shard files, in manifest order
    shard_records: tuple[int, int] | None     # (size, rank): keep every size-th record, or None
    records: int                              # how many records this rank reads
    cache: ShardCache | None = None

    def local_paths(self, epoch: int = -1, seed: int = 0):
        """Local paths of its files, each fetched when needed: in manifest order (epoch < 0) or
        in an order drawn from (seed, epoch), so a large dataset is not read in one file order
        every epoch."""
        order = list(self.shards)
        if epoch >= 0:
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
        return self.cache.paths(order, reader=id(self))      # one reader of this share at a time


def files_for_rank(files: list, rank: int, size: int) -> tuple[list, bool]:
    """Every rank reads whole files when there are enough of them; otherwise every rank reads
    all files and keeps every size-th record (returned flag True)."""
    if len(files) >= size:
        return files[rank::size], False
    return files, True


def rank_share(manifest: Manifest, split: str, rank: int, size: int,
               cache: ShardCache | None = None) -> RankShare:
    """This rank's part of a split (an absent split is an empty share); its files reach disk
    through `cache` when they are read."""
    if split not in manifest.splits:
        return RankShare([], None, 0, cache)
    shards = manifest.splits[split].shards
    mine, by_record = files_for_rank(list(shards), rank, size)
    if by_record:      # every size-th record of all files, from the rank-th on
        total = sum(s.records for s in shards)
        return RankShare(mine, (size, rank), max(0, math.ceil((total - rank) / size)), cache)
    return RankShare(mine, None, sum(s.records for s in mine), cache)


def stage(storage: Storage, dataset_url: str, manifest: Manifest, split: str, indices: list[int],
          cache_dir: str) -> list[str]:
    """Bring the given shards of a split to local disk, verified by sha256 when fetched and
    again on every reuse (a file changed in the cache since, by a crash or a hand, is fetched
    again). The cache is content-addressed (the sha256 is in the file name), so jobs on one host
    share it. Local names come from the manifest, the bucket's: one that would leave `cache_dir`
    is refused before anything is fetched."""
    shards = [manifest.splits[split].shards[i] for i in indices]
    local_root = path_under(cache_dir, manifest.name)
    paths = [path_under(local_root, local_name(shard, keep_folders=True)) for shard in shards]

    def fetch(shard, path):
        if os.path.exists(path) and file_digest(path)[0] == shard.sha256:
            return path
        url = join(dataset_url, shard.file)
        incoming = f"{path}.{os.getpid()}.incoming"   # ranks on one host may fetch the same shard
        storage.download(url, incoming)
        if file_digest(incoming)[0] != shard.sha256:
            os.remove(incoming)
            raise ShardChecksumError(f"{url}: sha256 differs from the manifest (corrupt or replaced)")
        os.replace(incoming, path)
        return path

    with ThreadPoolExecutor(STAGING_THREADS) as pool:
        return list(pool.map(fetch, shards, paths))
