"""The reader side every consumer of a dataset needs: which shard files of a split one rank
(of `size`) reads, brought to local disk once and checked against the manifest's sha256.

Ranks read whole files when there are at least as many files as ranks; otherwise every rank
reads all files and keeps every size-th record (`shard_records`). No TensorFlow here: the
trainer builds its tf.data pipeline on the local paths."""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from pipeline.dataset.manifest import Manifest
from pipeline.dataset.storage import Storage, file_digest, join

STAGING_THREADS = 8


class ShardChecksumError(Exception):
    """A shard's bytes differ from the sha256 the manifest lists."""


class RankShare(NamedTuple):
    paths: list[str]                          # local files, in manifest order
    shard_records: tuple[int, int] | None     # (size, rank): keep every size-th record, or None
    records: int                              # how many records this rank reads


def files_for_rank(files: list, rank: int, size: int) -> tuple[list, bool]:
    """Every rank reads whole files when there are enough of them; otherwise every rank reads
    all files and keeps every size-th record (returned flag True)."""
    if len(files) >= size:
        return files[rank::size], False
    return files, True


def rank_share(storage: Storage, dataset_url: str, manifest: Manifest, split: str, rank: int,
               size: int, cache_dir: str) -> RankShare:
    """This rank's part of a split, staged locally (an absent split is an empty share)."""
    if split not in manifest.splits:
        return RankShare([], None, 0)
    shards = manifest.splits[split].shards
    mine, by_record = files_for_rank(list(range(len(shards))), rank, size)
    paths = stage(storage, dataset_url, manifest, split, mine, cache_dir)
    if by_record:      # every size-th record of all files, from the rank-th on
        total = sum(s.records for s in shards)
        return RankShare(paths, (size, rank), max(0, math.ceil((total - rank) / size)))
    return RankShare(paths, None, sum(shards[i].records for i in mine))


def stage(storage: Storage, dataset_url: str, manifest: Manifest, split: str, indices: list[int],
          cache_dir: str) -> list[str]:
    """Bring the given shards of a split to local disk (once; verified by sha256). The cache is
    content-addressed (the sha256 is in the file name), so jobs on one host share it safely."""
    shards = [manifest.splits[split].shards[i] for i in indices]
    local_root = os.path.join(cache_dir, manifest.name)

    def fetch(shard):
        path = os.path.join(local_root, shard.sha256[:16] + "-" + shard.file)
        if os.path.exists(path):
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
        return list(pool.map(fetch, shards))
