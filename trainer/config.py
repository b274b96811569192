"""The trainer's flags turned once into a small typed configuration; functions below take the
part they use, never the whole argparse namespace."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re


AUGMENT = {"auto": None, "on": True, "off": False}


def default_cache_dir() -> str:
    """A per-user folder (0700), never a predictable one in /tmp that other local users could
    read (shards, models) or plant files in."""
    from pipeline.dataset.local_paths import user_cache_dir
    return user_cache_dir("trainer")


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """What one rank's input pipeline needs."""
    dataset: str
    cache_dir: str
    seed: int
    augment: bool | None = True      # None: auto, decided from the run's length (train.py)
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    erase: float = 0.0               # --erase: probability of random erasing per image
    image_size: tuple[int, int] | None = None     # (height, width): photos cropped to it (sizing)
    cache_limit_gb: float = 20.0     # shard files on local disk per rank (pipeline/dataset/shard_cache.py)
    memory_cache_gb: float = 2.0     # decoded images kept in memory per rank, when they fit


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "cnn"
    weight_decay: float = 5e-4
    init_from: str | None = None
    restore: tuple[str, ...] | None = None     # --restore prefixes; None: every matching layer
    freeze: str | None = None
    unfreeze_top: int = 0                      # backbone blocks trained again despite --freeze
    heads: str | None = None                   # --heads spec; None: one head on `label`
    head_weights: str | None = None


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.025
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    decay: str = "cosine"
    decay_epochs: tuple[float, ...] = ()
    decay_factor: float = 0.1
    label_smoothing: float = 0.0
    class_weights: str = "none"


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Where a run writes (rank 0) and how often."""
    checkpoint_dir: str
    model_dir: str | None = None
    report: str | None = None
    keep_checkpoints: int = 3
    checkpoint_every: int = 0
    commit_every: int = 20
    tensorboard: bool = True
    profile: bool = False
    log_every: float = 10.0

    def model_url(self) -> str:
        from pipeline.dataset.storage import join
        return self.model_dir or join(self.checkpoint_dir, "model")

    def report_url(self) -> str:
        from pipeline.dataset.storage import join
        return self.report or join(self.checkpoint_dir, "report.json")


@dataclasses.dataclass(frozen=True)
class DeviceConfig:
    """How each rank computes."""
    precision: str = "float32"
    xla: bool = False
    fp16_allreduce: bool = False
    accumulate: int = 1              # batches whose gradients make one update
    threads: int | None = None       # None: the host's CPU budget / local ranks


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    inputs: InputConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    outputs: OutputConfig
    devices: DeviceConfig = DeviceConfig()
    epochs: int = 10
    batch_size: int = 64
    global_batch_size: int | None = None
    check_input: str | None = None
    precise_bn: int = 100            # batches per rank for the final batch-norm statistics; 0: off
    divergence_factor: float = 10.0  # an epoch's loss above this x the first epoch's: diverged
    s3_endpoint_url: str | None = None
    resume_other_version: bool = False   # resume a checkpoint trained on another dataset version

    @property
    def job_id(self) -> str:
        """A name for this job's local files: readable, and unique per checkpoint URL."""
        url = self.outputs.checkpoint_dir.rstrip("/")
        readable = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://")[-1])[-48:].strip("-.")
        return f"{readable}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"

    def local_dir(self, rank: int, *parts: str) -> str:
        """Where this rank of this job writes locally (its shards as they are fetched,
        checkpoints before upload, the export, plots, logs): <cache-dir>/jobs/<job id>/rank-<r>,
        so jobs and ranks sharing a host never touch each other's files (train.py makes the
        rank's folder 0700)."""
        return os.path.join(self.inputs.cache_dir, "jobs", self.job_id, f"rank-{rank}", *parts)

    @classmethod
    def from_args(cls, args) -> "TrainConfig":
        restore = tuple(p.strip() for p in args.restore.split(",") if p.strip()) if args.restore else None
        return cls(
            inputs=InputConfig(dataset=args.dataset, cache_dir=args.cache_dir or default_cache_dir(),
                               seed=args.seed,
                               augment=AUGMENT[args.augment if not args.no_augment else "off"], flip=args.flip,
                               brightness=args.brightness, contrast=args.contrast, erase=args.erase,
                               image_size=args.image_size, cache_limit_gb=args.cache_limit_gb,
                               memory_cache_gb=args.memory_cache_gb),
            model=ModelConfig(name=args.model, weight_decay=args.weight_decay, init_from=args.init_from,
                              restore=restore, freeze=args.freeze, unfreeze_top=args.unfreeze_top,
                              heads=args.heads, head_weights=args.head_weights),
            optimizer=OptimizerConfig(name=args.optimizer, lr=args.lr, momentum=args.momentum,
                                      warmup_epochs=args.warmup_epochs, decay=args.decay,
                                      decay_epochs=args.decay_epochs, decay_factor=args.decay_factor,
                                      label_smoothing=args.label_smoothing,
                                      class_weights=args.class_weights),
            outputs=OutputConfig(checkpoint_dir=args.checkpoint_dir, model_dir=args.model_dir,
                                 report=args.report, keep_checkpoints=args.keep_checkpoints,
                                 checkpoint_every=args.checkpoint_every, commit_every=args.commit_every,
                                 tensorboard=not args.no_tensorboard, profile=args.profile,
                                 log_every=args.log_every),
            devices=DeviceConfig(precision=args.precision, xla=args.xla,
                                 fp16_allreduce=args.fp16_allreduce, accumulate=args.accumulate,
                                 threads=args.threads),
            epochs=args.epochs, batch_size=args.batch_size, global_batch_size=args.global_batch_size,
            check_input=args.check_input, precise_bn=args.precise_bn,
            divergence_factor=args.divergence_factor,
            s3_endpoint_url=args.s3_endpoint_url, resume_other_version=args.resume_other_version)

    def settings(self) -> dict:
        """The report's record of the settings, by flag name."""
        m, o, i = self.model, self.optimizer, self.inputs
        return {"batch_size": self.batch_size, "lr": o.lr, "optimizer": o.name, "momentum": o.momentum,
                "precise_bn": self.precise_bn, "divergence_factor": self.divergence_factor,
                "weight_decay": m.weight_decay, "warmup_epochs": o.warmup_epochs, "decay": o.decay,
                "decay_epochs": o.decay_epochs, "decay_factor": o.decay_factor,
                "label_smoothing": o.label_smoothing, "class_weights": o.class_weights,
                "flip": i.flip, "augment": i.augment, "brightness": i.brightness,
                "contrast": i.contrast, "erase": i.erase, "seed": i.seed, "image_size": i.image_size,
                "cache_limit_gb": i.cache_limit_gb, "memory_cache_gb": i.memory_cache_gb,
                "init_from": m.init_from,
                "restore": ",".join(m.restore) if m.restore else None, "freeze": m.freeze,
                "unfreeze_top": m.unfreeze_top, "heads": m.heads, "head_weights": m.head_weights,
                **dataclasses.asdict(self.devices)}
