"""How many shards a split gets, and which shard a record goes to."""
from __future__ import annotations

import math

from pipeline.splits import unit_hash

DEFAULT_TARGET_SHARD_BYTES = 128 * 2**20    # TFDS's target: big enough for streaming reads
# Small images (a 28x28 PNG is ~300 B) would put a million records in one 128 MiB shard: a cap
# keeps files many enough to shuffle by file and to split over readers.
MAX_RECORDS_PER_SHARD = 10_000


def num_shards(num_records: int, num_bytes: int, num_readers: int,
               target_shard_bytes: int = DEFAULT_TARGET_SHARD_BYTES,
               max_records: int = MAX_RECORDS_PER_SHARD) -> int:
    """Shards of about `target_shard_bytes` and at most `max_records` records each; with at
    least `num_readers` records, at least one shard per reader and a multiple of the readers
    (each rank gets as many files). Fewer records than readers: one shard (the trainer then
    shards by record and says so)."""
    if num_records == 0:
        return 0
    wanted = max(math.ceil(num_bytes / target_shard_bytes), math.ceil(num_records / max_records), 1)
    if num_records < num_readers:
        return 1
    return math.ceil(wanted / num_readers) * num_readers


def shard_index(record_id: str, shards: int) -> int:
    return min(int(unit_hash(record_id, "shard:") * shards), shards - 1)
