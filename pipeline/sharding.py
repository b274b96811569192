"""How many shards a split gets, and which shard a record goes to."""
from __future__ import annotations

import math

from pipeline.splits import unit_hash

RECORDS_PER_SHARD = 1000          # rule of thumb: ~1000 shards per million images
DEFAULT_TARGET_SHARD_BYTES = 128 * 2**20


def num_shards(num_records: int, num_bytes: int, num_readers: int,
               target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES) -> int:
    """Enough shards for the size and count rules, at least readers x 10 where every shard can
    still hold a record, rounded up to a multiple of the readers so each rank gets as many files."""
    if num_records == 0:
        return 0
    wanted = max(math.ceil(num_bytes / target_shard_bytes),
                 math.ceil(num_records / RECORDS_PER_SHARD),
                 min(num_readers * 10, num_records // 2), 1)
    return math.ceil(wanted / num_readers) * num_readers


def shard_index(record_id: str, shards: int) -> int:
    return min(int(unit_hash(record_id, "shard:") * shards), shards - 1)


def shard_name(dataset: str, split: str, index: int, shards: int) -> str:
    return f"{dataset}-{split}.tfrecord-{index:05d}-of-{shards:05d}"
