"""One rank's share of a dataset: which shards it reads, its epoch plan, its tf.data pipelines.

Built again whenever the world changes size (elastic mode), so it depends only on (rank, size)."""
from __future__ import annotations

from pipeline.dataset.manifest import Manifest
from pipeline.dataset.reader import rank_share
from pipeline.dataset.shard_cache import ShardCache
from trainer.config import InputConfig
from trainer.errors import UsageError
from trainer.input import datasets
from trainer.input.augment import Augmentation, PhotoAugmentation
from trainer.input.in_memory import DecodedImages
from trainer.input.model_input import ModelInput

SPLITS = ("train", "validation", "test")


class RankInputs:
    def __init__(self, config: InputConfig, manifest: Manifest, model_input: ModelInput, threads: int,
                 steps: int, batch_size: int, rank: int, size: int, cache: ShardCache,
                 outputs: dict[str, str] | None = None):
        self.threads, self.rank, self.size = threads, rank, size
        # Decided once per run (trainer/input/model_input.py): the same for every rank and world.
        self.shape, self.sizing, self.standardize = model_input.shape, model_input.sizing, model_input.standardize
        self.outputs = outputs          # several heads: {model output: attribute}
        self.batch_size = batch_size    # this rank's
        # Shards reach disk as they are read, within --cache-limit-gb (this process's own folder).
        self.splits = {split: rank_share(manifest, split, rank, size, cache) for split in SPLITS}
        count = self.splits["train"].records
        if count == 0:
            raise UsageError(f"rank {rank} of {size} has no training records (the training split has "
                             f"{len(manifest.splits['train'].shards)} shards); use fewer processes")
        train = manifest.splits["train"]
        encoded = train.num_bytes / max(1, train.num_records)      # photos are cached undecoded
        self.plan = datasets.epoch_plan(count, self.shape, steps=steps, batch_size=self.batch_size,
                                        seed=config.seed + rank, record_bytes=encoded if self.sizing else None,
                                        memory_limit=config.memory_cache_gb * 2**30)
        self.augmentation = augmentation(config, self.shape, self.sizing, rank) if config.augment else None
        self._decoded = None
        self.validation_count = manifest.splits["validation"].num_records if "validation" in manifest.splits else 0

    @property
    def validation_steps(self) -> int:
        """Validation batches per rank: every rank the same number, 0 when too few records."""
        return self.validation_count // (self.batch_size * self.size)

    def training(self, start: tuple[int, int]):
        share = self.splits["train"]
        return datasets.training_dataset(share, self.shape, self.plan, start=start,
                                         augmentation=self.augmentation, threads=self.threads,
                                         shard_records=share.shard_records, standardize=self.standardize,
                                         outputs=self.outputs, sizing=self.sizing, in_memory=self.decoded())

    def decoded(self) -> DecodedImages | None:
        """This rank's training images decoded into memory, once (plan.in_memory only)."""
        if self.plan.in_memory and self._decoded is None:
            share = self.splits["train"]
            self._decoded = DecodedImages(share, self.shape, share.shard_records, self.outputs)
            if self.rank == 0:
                print(f"rank 0: decoded {self._decoded.count:,} training images into memory in "
                      f"{self._decoded.seconds:.1f} s ({self._decoded.rate:,.0f} images/s)", flush=True)
        return self._decoded

    def evaluation(self, split: str, batch_size: int, **options):
        share = self.splits[split]
        return datasets.eval_dataset(share, self.shape, batch_size=batch_size, threads=self.threads,
                                     shard_records=share.shard_records, standardize=self.standardize,
                                     outputs=self.outputs, sizing=self.sizing, **options)

    def validation(self):
        return self.evaluation("validation", self.batch_size, repeat=True)

    def statistics(self):
        """This rank's training images as evaluation sees them (no augmentation), repeated: what
        precise batch-norm statistics are averaged over. In a fixed order: the first batches
        are used, and a resumed run must average the same ones as an uninterrupted run."""
        return self.evaluation("train", self.batch_size, repeat=True, deterministic=True)

    def test(self, with_ids: bool = False):
        """Batches of the test split (with each record's id third: predictions.parquet)."""
        return self.evaluation("test", 256, with_ids=with_ids)

    def batch_ids(self, epoch: int, batch: int) -> list[str]:
        share = self.splits["train"]
        return datasets.batch_record_ids(share, share.shard_records, self.plan, epoch, batch)


def augmentation(config: InputConfig, shape, sizing, rank: int) -> Augmentation:
    """This rank's augmentation: keyed by seed + rank, so ranks never draw the same numbers;
    photos get random-resized crops (PhotoAugmentation), images of one size padded crops."""
    photos = {"sizing": sizing} if sizing else {}
    kind = PhotoAugmentation if sizing else Augmentation
    return kind(tuple(shape), config.seed + rank, flip=config.flip, brightness=config.brightness,
                contrast=config.contrast, erase=config.erase, **photos)
