"""The training story, top to bottom, for one Horovod rank (run under horovodrun). It follows
Horovod's Keras example: initialise, pin a GPU, read the data, build the model, scale the learning
rate, wrap the optimizer, broadcast rank 0's variables, train with checkpoints and logs on rank 0
only; the branches are the small functions below it."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time

import tensorflow as tf
import horovod.tensorflow as hvd_tf
import horovod.tensorflow.keras as hvd

from pipeline.dataset.local_paths import private_dir
from pipeline.dataset.manifest import Manifest, current_version, read_manifest
from pipeline.dataset.reader import files_for_rank
from pipeline.dataset.shard_cache import ShardCache, check_room
from pipeline.dataset.storage import Storage
from trainer.checks import check_flags
from trainer.config import TrainConfig
from trainer.errors import UsageError
from trainer.flags import AUGMENT_FROM_UPDATES
from trainer.input.batching import BatchPlan, plan_batches
from trainer.input.model_input import ModelInput
from trainer.keras import keras
from trainer.model import heads as heads_lib, objective, precision
from trainer.model.models import build_model, random_generators
from trainer.model.schedule import WarmupDecay
from trainer.results.finish import finish
from trainer.runtime import agree, devices, faults, inputcheck
from trainer.runtime.run import Run, fit_and_score, fit_elastic, rank_inputs, weights_digest
from trainer.state import warmstart
from trainer.state.checkpoints import CheckpointStore, checkpoint_lease, resumable, resume

__all__ = ["train", "UsageError"]


def train(config: TrainConfig) -> dict | None:
    """One rank's run. Rank 0 returns the report (the other ranks None); --check-input only
    returns the input check."""
    with contextlib.ExitStack() as held:       # rank 0's lease on --checkpoint-dir, to the end
        return run_rank(config, held)


def run_rank(config: TrainConfig, held: contextlib.ExitStack) -> dict | None:
    started = time.monotonic()
    storage = Storage(endpoint_url=config.s3_endpoint_url)
    before_horovod(config)
    # Horovod: initialise; horovodrun started this same program once per rank.
    hvd.init()
    device, threads = place(config)
    rank, size = hvd.rank(), hvd.size()       # Horovod: this process's place among all of them
    elastic = os.environ.get("HOROVOD_ELASTIC") == "1"       # Horovod: horovodrun --min-np/--max-np
    on_every_rank, on_rank_zero = agreement(elastic, rank)
    say = print if rank == 0 else silent
    private_dir(config.local_dir(rank))        # this rank's local files: other local users' never
    # One run per --checkpoint-dir: rank 0 leases it (a second run is refused) until the end.
    lease = checkpoint_lease(storage, config.outputs.checkpoint_dir) if rank == 0 else None
    if lease is not None:
        held.callback(lease.release)
    on_rank_zero(lambda: lease and lease.acquire())

    # Data: rank 0 picks the dataset's version (a publish meanwhile never splits the ranks);
    # the flags and that version checked on every rank; what the model takes, computed once.
    version = on_rank_zero(lambda: current_version(storage, config.inputs.dataset))
    manifest, heads, model_input = on_every_rank(lambda: checked_inputs(config, storage, version))
    if hvd.local_rank() == 0:      # Horovod: one line per host
        print(host_line(device, threads), flush=True)
    # Resume wins over --init-from: rank 0 finds the newest complete checkpoint for everyone
    # (elastic: each rank reads the listing; rank 0's state is broadcast at the start).
    store = CheckpointStore(storage, config.outputs.checkpoint_dir, config.local_dir(rank, "checkpoints"),
                            config.outputs.keep_checkpoints, lease)
    latest = on_rank_zero(lambda: resumable(store, manifest.content_id, config.inputs.dataset,
                                            config.resume_other_version, say))
    batches = on_every_rank(lambda: plan_batches(
        manifest.splits["train"].num_records, size, config.batch_size, config.devices.accumulate,
        config.global_batch_size, (latest or {}).get("global_batch"), elastic))
    config, why = resolve_augmentation(config, batches, say)
    for line in start_lines(config, manifest, heads, model_input, batches, device, elastic, why):
        say(line, flush=True)
    # Shards are fetched as they are read, within --cache-limit-gb, in this process's own folder.
    shards = on_every_rank(lambda: ShardCache(storage, config.inputs.dataset, config.local_dir(rank, "shards"),
                                              config.inputs.cache_limit_gb * 2**30))
    checked = None
    if config.check_input:
        training = rank_inputs(config, manifest, heads, model_input, threads, batches, rank, size, shards)
        checked = inputcheck.measure(config, training.training((0, 0)), model_input.shape,
                                     len(manifest.classes), batches.steps_per_epoch, say)
        if config.check_input == "only":
            return checked

    # Model (same initial weights on every rank), warm start, frozen layers.
    model = heads_lib.attach(build_model(config.model.name, model_input.shape, len(manifest.classes),
                                         config.model.weight_decay, model_input.standardize),
                             heads, config.model.weight_decay)
    warm = None
    if config.model.init_from and latest is None:
        warm = on_every_rank(lambda: warmstart.from_config(storage, config, model, rank))
        say(f"initialised from {warm['source']}: restored {len(warm['restored'])} layers, "
            f"new: {', '.join(warm['new']) or 'none'}", flush=True)
    frozen = freeze(config, model, say)

    # Optimizer: the learning rate scaled with the global batch, after a warm-up (Goyal et al.).
    o, d = config.optimizer, config.devices
    base = objective.make_optimizer(o.name, make_schedule(config, batches), o.momentum)
    optimizer = distributed_optimizer(base, d.precision, d.fp16_allreduce, d.accumulate)
    fault_flag = tf.Variable(0.0, trainable=False) if faults.planned() else None
    model.compile(optimizer=optimizer, **compile_args(heads, manifest, o, fault_flag))
    precision.base_optimizer(optimizer)._create_all_weights(model.trainable_variables)   # slots exist
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, rng=random_generators(model))
    start = resumed_position(store, checkpoint, latest, batches.steps_per_epoch, rank, say)
    run = Run(config, storage, manifest, heads, model_input, threads, batches, model, checkpoint, store,
              shards, fault_flag)

    if elastic:
        scored = fit_elastic(run, start)
    else:
        # Horovod: every rank starts from rank 0's variables (and loss scale). Before training, not
        # after its first batch as Horovod's callback does: that would also overwrite the other ranks'
        # batch-norm statistics mid-epoch, so a resumed run would not match an uninterrupted one.
        hvd_tf.broadcast_variables(model.variables + optimizer.variables()
                                   + precision.loss_scale_variables(optimizer), root_rank=0)
        scored = fit_and_score(run, start)

    print(f"rank {hvd.rank()} weights sha256 {weights_digest(model)}", flush=True)
    if hvd.rank() != 0:        # Horovod: rank 0 alone exports the model and writes the report
        return None
    report = {"dataset": config.inputs.dataset, "dataset_version": manifest.version, "model": config.model.name,
              "world_size": hvd.size(), "elastic": elastic, "epochs": config.epochs, "resumed_from": latest,
              "steps_per_epoch": batches.steps_per_epoch, "global_batch": batches.global_batch,
              "updates_per_epoch": batches.updates_per_epoch, "device": device,
              "loss_scale": precision.loss_scale(optimizer), "history": run.history, "samples": run.samples,
              "init_from": warm, "frozen": frozen, "settings": config.settings(),
              "tensorboard": run.tensorboard_url, "input_check": checked}
    if lease is not None:
        lease.verify()                # the model and report go where no other run has taken over
    return finish(storage, config, model, scored, heads, model_input, started, report)


def silent(*args, **kwargs) -> None:
    """`say` on ranks other than 0: one copy of each line is enough."""


def before_horovod(config: TrainConfig) -> None:
    """What must be set before hvd.init() and the first TensorFlow op."""
    if config.outputs.profile:   # Horovod: a timeline rank 0 can start and stop for a few steps
        os.environ.setdefault("HOROVOD_TIMELINE", "DYNAMIC")
    keras.utils.set_random_seed(config.inputs.seed)  # first: the input order and the weights come from it
    keras.backend.experimental.enable_tf_random_generator()   # dropout's RNG state can be saved
    devices.default_cycle_time()      # Horovod: how often it fuses ready tensors, read by hvd.init()


def place(config: TrainConfig) -> tuple[str, int]:
    """This rank's device and CPU threads, and the numerics it computes with; returns (device, threads)."""
    # Horovod: one GPU per rank, picked by the local rank, before the first TensorFlow op.
    device = devices.place(hvd.local_rank(), hvd.local_size())
    # Horovod: the host's CPUs shared by the ranks on it.
    threads = devices.threads_per_rank(hvd.local_size(), config.devices.threads)
    devices.use_threads(threads)
    precision.set_policy(config.devices.precision)
    precision.set_xla(config.devices.xla)
    return device, threads


def agreement(elastic: bool, rank: int):
    """How a check before training runs: on every rank, or on rank 0 for everyone, its failure
    reaching every rank (trainer/runtime/agree.py). Elastic: no collective before the elastic loop (a
    process that joins later would wait in it forever), so each rank checks for itself."""
    if elastic:
        return (lambda check: check()), (lambda check: check())
    # Horovod: every rank's outcome allgathered, or rank 0's broadcast.
    return (lambda check: agree.on_every_rank(check, rank, hvd_tf.allgather_object),
            lambda check: agree.on_rank_zero(check, rank, hvd_tf.broadcast_object))


def checked_inputs(config: TrainConfig, storage: Storage, version: str | None):
    """The flags checked, then the dataset's manifest (of `version`), heads and what the model
    takes (its image shape, how photos are cropped to it, the standardisation): each computed
    once, here."""
    check_flags(config)
    manifest = read_manifest(storage, config.inputs.dataset, version)
    heads = heads_lib.choose(config.model.heads, manifest, config.model.head_weights)
    check_room({name: split.shards for name, split in manifest.splits.items()}, config.inputs.cache_limit_gb * 2**30)
    return manifest, heads, ModelInput.of(manifest, config.inputs.image_size)


def host_line(device: str, threads: int) -> str:
    return (f"host {socket.gethostname()}: {hvd.local_size()} rank(s), "
            f"{'one GPU each (memory growth on)' if device != 'CPU' else 'CPU only'}, "
            f"{threads} CPU thread(s) each")


def resolve_augmentation(config: TrainConfig, batches: BatchPlan, say) -> tuple[TrainConfig, str]:
    """--augment auto: crops pay off on long runs and cost accuracy on short ones (a few hundred
    updates are too few to learn the shifted copies; on photos of many sizes the random-resized
    crops too: docs/trainer.md "Defaults"). The same decision on every rank: it depends only on
    the epochs and the batch plan. Returns the config and why augmentation is on or off."""
    i = config.inputs
    if i.augment is not None:
        return config, f"--augment {'on' if i.augment else 'off'}"
    updates = batches.updates_per_epoch * config.epochs
    asked = i.flip or i.brightness or i.contrast or i.erase        # explicit augmentation flags win
    augment = asked or updates >= AUGMENT_FROM_UPDATES
    why = ("--flip, --brightness, --contrast or --erase given" if asked else
           f"{updates} updates, {'at least' if augment else 'fewer than'} {AUGMENT_FROM_UPDATES}")
    say(f"augmentation {'on' if augment else 'off'} (--augment auto: {why})", flush=True)
    return dataclasses.replace(config, inputs=dataclasses.replace(config.inputs, augment=augment)), \
        f"--augment auto: {why}"


def start_lines(config: TrainConfig, manifest: Manifest, heads: list, model_input: ModelInput,
                batches: BatchPlan, device: str, elastic: bool, why: str = "") -> list[str]:
    """What rank 0 says before training: the run in one line, then photo crops (and why
    augmentation is on or off), heads, and splits with fewer shard files than processes, when
    there are any."""
    d, size = config.devices, batches.size
    numerics = f"{d.precision}{', XLA' if d.xla else ''}{', fp16 allreduce' if d.fp16_allreduce else ''}"
    lines = [f"training {config.model.name} on {manifest.name}: {size} processes, global batch "
             f"{batches.global_batch}{f' ({d.accumulate} accumulated batches)' if d.accumulate > 1 else ''}, "
             f"{device}, {numerics}, image {model_input.shape}, {len(manifest.classes)} classes, "
             f"{batches.steps_per_epoch} steps per epoch{', elastic' if elastic else ''}"]
    if model_input.sizing:
        lines.append(model_input.sizing.describe(bool(config.inputs.augment), why))
    if heads_lib.describe(heads):
        lines.append(heads_lib.describe(heads))
    return lines + record_sharding(manifest, size)


def record_sharding(manifest: Manifest, size: int) -> list[str]:
    """Say so when a split has fewer shard files than processes: every process then reads all of
    its files and keeps every size-th record (more reading per process than file sharding)."""
    lines = []
    for name, split in manifest.splits.items():
        if split.shards and files_for_rank(split.shards, 0, size)[1]:
            lines.append(f"{name}: {len(split.shards)} shard file(s) for {size} processes: each process "
                         f"reads all of them and keeps one record in {size} ({split.num_records} records)")
    return lines


def freeze(config: TrainConfig, model, say) -> list[str]:
    """--freeze (and --unfreeze-top): the frozen layers, said in one line."""
    if not config.model.freeze:
        return []
    frozen = warmstart.freeze(model, config.model.freeze, config.model.unfreeze_top)
    if frozen:
        say(f"frozen: {warmstart.describe_frozen(model, frozen)}", flush=True)
    return frozen


def make_schedule(config: TrainConfig, batches: BatchPlan) -> WarmupDecay:
    """In optimizer updates: the LR scales with the images per update (Goyal et al.)."""
    o, epochs, updates = config.optimizer, config.epochs, batches.updates_per_epoch
    boundaries = o.decay_epochs or (epochs * 0.5, epochs * 0.75)
    return WarmupDecay(o.lr, batches.global_batch / config.batch_size, int(o.warmup_epochs * updates),
                       epochs * updates, o.decay, [int(e * updates) for e in boundaries], o.decay_factor,
                       batches.accumulate)


def distributed_optimizer(base, precision_name: str, fp16_allreduce: bool, accumulate: int):
    """`base` (SGD or Adam) inside Horovod's DistributedOptimizer, inside a LossScaleOptimizer for
    mixed_float16: the order Keras builds and the only one Horovod 0.28.1 accepts
    (trainer/model/precision.py)."""
    # Horovod: average the gradients over ranks (allreduce) before each update: as float16 on the
    # wire with --fp16-allreduce; --accumulate batches summed on each rank first.
    distributed = hvd.DistributedOptimizer(
        base, compression=hvd.Compression.fp16 if fp16_allreduce else hvd.Compression.none,
        backward_passes_per_step=accumulate, average_aggregated_gradients=True)
    return precision.loss_scaled(distributed, precision_name)


def compile_args(heads, manifest, o, fault_flag) -> dict:
    """Loss and metrics; the loss poisoned by the fault-injection hook when a test asks."""
    args = heads_lib.compile_args(heads, manifest, o.label_smoothing, o.class_weights)
    if fault_flag is not None:
        loss = args["loss"]
        args["loss"] = ({k: faults.poison(f, fault_flag) for k, f in loss.items()}
                        if isinstance(loss, dict) else faults.poison(loss, fault_flag))
    return args


def resumed_position(store: CheckpointStore, checkpoint: tf.train.Checkpoint, latest: dict | None,
                     steps: int, rank: int, say) -> tuple[int, int]:
    """(epoch, batch) to train from: (0, 0), or the checkpoint rank 0 chose, restored; the
    optimizer's step counter, which the learning rate schedule reads, set to match."""
    optimizer = checkpoint.optimizer
    start = resume(store, checkpoint, latest, steps, rank, say) if latest is not None else (0, 0)
    if latest is not None and precision.loss_scale(optimizer) is not None:
        say(f"loss scale {precision.loss_scale(optimizer):g} restored", flush=True)
    optimizer.iterations.assign(start[0] * steps + start[1])
    return start
