"""One rank's share of a dataset: which shards it reads, its epoch plan, its tf.data pipelines.

Built again whenever the world changes size (elastic mode), so it depends only on (rank, size)."""
from __future__ import annotations

import math

from pipeline.manifest import Manifest
from pipeline.storage import Storage
from trainer import data
from trainer.errors import UsageError


class RankInputs:
    def __init__(self, storage: Storage, args, manifest: Manifest, shape, threads: int, steps: int,
                 global_batch: int, rank: int, size: int, outputs: dict[str, str] | None = None):
        self.shape, self.threads, self.rank = shape, threads, rank
        self.outputs = outputs          # several heads: {model output: attribute} labels
        self.batch_size = global_batch // size
        if self.batch_size == 0:
            raise UsageError(f"a global batch of {global_batch} cannot be split over {size} processes")
        self.standardize = data.Standardize.from_manifest(manifest)
        self.splits = {split: rank_files(storage, args, manifest, split, rank, size)
                       for split in ("train", "validation", "test")}
        paths, _, count = self.splits["train"]
        if count == 0:
            raise UsageError(f"rank {rank} of {size} has no training records (the training split has "
                             f"{len(manifest.splits['train'].shards)} shards); use fewer processes")
        self.plan = data.epoch_plan(count, shape, steps=steps, batch_size=self.batch_size,
                                    seed=args.seed + rank)
        self.augmentation = None if args.no_augment else data.Augmentation(
            tuple(shape), args.seed + rank, flip=not args.no_flip, brightness=args.brightness,
            contrast=args.contrast)
        self.validation_count = manifest.splits["validation"].num_records if "validation" in manifest.splits else 0

    def training(self, start: tuple[int, int]):
        paths, shard_records, _ = self.splits["train"]
        return data.training_dataset(paths, self.shape, self.plan, start=start,
                                     augmentation=self.augmentation, threads=self.threads,
                                     shard_records=shard_records, standardize=self.standardize,
                                     outputs=self.outputs)

    def validation(self):
        paths, shard_records, _ = self.splits["validation"]
        return data.eval_dataset(paths, self.shape, batch_size=self.batch_size, threads=self.threads,
                                 shard_records=shard_records, repeat=True, standardize=self.standardize,
                                 outputs=self.outputs)

    def test(self):
        paths, shard_records, _ = self.splits["test"]
        return data.eval_dataset(paths, self.shape, batch_size=256, threads=self.threads,
                                 shard_records=shard_records, standardize=self.standardize,
                                 outputs=self.outputs)

    def batch_ids(self, epoch: int, batch: int) -> list[str]:
        paths, shard_records, _ = self.splits["train"]
        return data.batch_record_ids(paths, shard_records, self.plan, epoch, batch)


def rank_files(storage: Storage, args, manifest: Manifest, split: str, rank: int, size: int):
    """(local shard paths, record-level (num_shards, index) or None, this rank's record count)."""
    if split not in manifest.splits:
        return [], None, 0
    shards = manifest.splits[split].shards
    mine, by_record = data.files_for_rank(list(range(len(shards))), rank, size)
    paths = data.stage(storage, args.dataset, manifest, split, mine, args.cache_dir)
    if by_record:      # every size-th record of all files, from the rank-th on
        total = sum(s.records for s in shards)
        return paths, (size, rank), max(0, math.ceil((total - rank) / size))
    return paths, None, sum(shards[i].records for i in mine)
