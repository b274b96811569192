"""The training story, top to bottom, for one Horovod rank (run under horovodrun)."""
from __future__ import annotations

import os
import time

import tensorflow as tf
import horovod.tensorflow as hvd_tf
import horovod.tensorflow.keras as hvd

from pipeline.dataset.manifest import Manifest, read_manifest
from pipeline.dataset.storage import Storage
from trainer import data, heads as heads_lib, inputcheck, objective, warmstart
from trainer.checkpoints import CheckpointStore, latest_position, resume
from trainer.config import TrainConfig
from trainer.errors import UsageError
from trainer.finish import finish
from trainer.models import MODELS, build_model, random_generators
from trainer.run import Run, fit_and_score, fit_elastic, rank_inputs, weights_digest
from trainer.schedule import WarmupDecay

__all__ = ["train", "UsageError"]


def train(config: TrainConfig) -> dict | None:
    started = time.monotonic()
    storage = Storage(endpoint_url=config.s3_endpoint_url)
    check_flags(config)                                   # fail before any process waits on others
    manifest = read_manifest(storage, config.inputs.dataset)
    heads = heads_lib.choose(config.model.heads, manifest, config.model.head_weights)
    if config.outputs.profile:
        os.environ.setdefault("HOROVOD_TIMELINE", "DYNAMIC")   # lets rank 0 start it for a few steps
    tf.keras.utils.set_random_seed(config.inputs.seed)  # first: the input order and the weights come from it
    tf.keras.backend.experimental.enable_tf_random_generator()   # dropout's RNG state can be saved
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    elastic = os.environ.get("HOROVOD_ELASTIC") == "1"
    threads = share_cores(hvd.local_size())
    shape = image_shape(manifest)
    say = print if rank == 0 else (lambda *a, **k: None)

    # Resume wins over --init-from: rank 0 finds the newest complete checkpoint for everyone.
    # Elastic: no collective before the elastic loop (a process that joins later would wait in
    # it forever); each reads the listing itself and rank 0's state is broadcast at the start.
    store = CheckpointStore(storage, config.outputs.checkpoint_dir, config.local_dir("checkpoints"),
                            config.outputs.keep_checkpoints)
    if elastic:
        latest = latest_position(store)
    else:
        latest = hvd_tf.broadcast_object(latest_position(store) if rank == 0 else None, root_rank=0)
    global_batch, steps = batch_plan(config, manifest, latest, size, elastic)
    say(f"training {config.model.name} on {manifest.name}: {size} processes, global batch {global_batch}, "
        f"{threads} thread(s) each, image {shape}, {len(manifest.classes)} classes, {steps} steps "
        f"per epoch{', elastic' if elastic else ''}", flush=True)
    if heads_lib.describe(heads):
        say(heads_lib.describe(heads), flush=True)
    checked = None
    if config.check_input:
        checked = check_input(config, rank_inputs(storage, config, manifest, heads, shape, threads, steps,
                                                  global_batch, rank, size).training((0, 0)),
                              shape, len(manifest.classes), steps, say)
        if config.check_input == "only":
            return checked

    # Model (same initial weights on every rank), warm start, frozen layers.
    model = heads_lib.attach(build_model(config.model.name, shape, len(manifest.classes),
                                         config.model.weight_decay), heads, config.model.weight_decay)
    warm = None
    if config.model.init_from and latest is None:
        warm = warm_start(storage, config, model, rank)
        say(f"initialised from {warm['source']}: restored {len(warm['restored'])} layers, "
            f"new: {', '.join(warm['new']) or 'none'}", flush=True)
    frozen = warmstart.freeze(model, config.model.freeze) if config.model.freeze else []
    if frozen:
        say(f"frozen: {', '.join(frozen)}", flush=True)

    # Optimizer and schedule: LR scaled with the global batch, with a warm-up (Goyal et al.).
    o = config.optimizer
    schedule = make_schedule(config, global_batch / config.batch_size, steps)
    optimizer = hvd.DistributedOptimizer(objective.make_optimizer(o.name, schedule, o.momentum))
    model.compile(optimizer=optimizer, **heads_lib.compile_args(heads, manifest, o.label_smoothing,
                                                                 o.class_weights))
    optimizer._create_all_weights(model.trainable_variables)   # slots exist before restore/elastic state
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, rng=random_generators(model))
    start = resume(store, checkpoint, latest, steps, rank, say) if latest is not None else (0, 0)
    optimizer.iterations.assign(start[0] * steps + start[1])     # the schedule follows the position
    run = Run(config, storage, manifest, heads, shape, threads, steps, global_batch, model, checkpoint, store)

    if elastic:
        scored = fit_elastic(run, start)
    else:
        # Every rank starts from rank 0's variables. Before training, not after its first batch
        # as Horovod's callback does: that would also overwrite the other ranks' batch-norm
        # statistics mid-epoch, so a resumed run would not match an uninterrupted one.
        hvd_tf.broadcast_variables(model.variables + optimizer.variables(), root_rank=0)
        scored = fit_and_score(run, start)

    print(f"rank {hvd.rank()} weights sha256 {weights_digest(model)}", flush=True)
    if hvd.rank() != 0:
        return None
    report = {"dataset": config.inputs.dataset, "model": config.model.name, "world_size": hvd.size(),
              "elastic": elastic, "epochs": config.epochs, "resumed_from": latest, "steps_per_epoch": steps,
              "global_batch": global_batch, "history": run.history, "init_from": warm, "frozen": frozen,
              "settings": config.settings(), "tensorboard": run.tensorboard_url, "input_check": checked}
    return finish(storage, config, model, scored, heads, shape, data.Standardize.from_manifest(manifest),
                  started, report)


def batch_plan(config: TrainConfig, manifest: Manifest, latest: dict | None, size: int,
               elastic: bool) -> tuple[int, int]:
    """(global batch, steps per epoch): one global batch for the whole run, also when an elastic
    run loses or gains processes."""
    if elastic and not config.global_batch_size:
        raise UsageError("elastic mode needs --global-batch-size: the global batch must not depend "
                         "on how many processes happen to be there when each one starts")
    global_batch = (config.global_batch_size or (latest or {}).get("global_batch")
                    or config.batch_size * size)
    train_count = manifest.splits["train"].num_records
    steps = train_count // global_batch
    if steps == 0:
        raise UsageError(f"{train_count} training records are fewer than one global "
                         f"batch ({global_batch}); lower --batch-size")
    return global_batch, steps


def check_flags(config: TrainConfig) -> None:
    m, o = config.model, config.optimizer
    if m.name not in MODELS:
        raise UsageError(f"unknown model {m.name!r} (choose from: {', '.join(sorted(MODELS))})")
    if m.restore and not m.init_from:
        raise UsageError("--restore needs --init-from")
    if o.decay_epochs and o.decay != "step":
        raise UsageError("--decay-epochs needs --decay step")
    if o.decay_epochs and max(o.decay_epochs) >= config.epochs:
        raise UsageError(f"--decay-epochs {o.decay_epochs} must lie before --epochs {config.epochs}")


def check_input(config: TrainConfig, train_ds, shape, num_classes, steps, say) -> dict:
    """Every rank measures at once (they share the host as in training); rank 0 reports."""
    say("input check: measuring the tf.data pipeline alone, then the model step alone ...", flush=True)
    input_ips = inputcheck.input_rate(train_ds, min(steps, 50), config.batch_size)
    step_ips = inputcheck.step_rate(config.model.name, shape, num_classes, config.batch_size, 20)
    result = inputcheck.verdict(input_ips, step_ips)
    say(f"input check (per process): {result['verdict']}", flush=True)
    return result


def make_schedule(config: TrainConfig, scale: float, steps: int) -> WarmupDecay:
    o, epochs = config.optimizer, config.epochs
    boundaries = o.decay_epochs or (epochs * 0.5, epochs * 0.75)
    return WarmupDecay(o.lr, scale, int(o.warmup_epochs * steps), epochs * steps,
                       o.decay, [int(e * steps) for e in boundaries], o.decay_factor)


def warm_start(storage, config: TrainConfig, model, rank) -> dict:
    source, described = warmstart.load_source(storage, config.model.init_from,
                                              config.local_dir("warmstart"), rank)
    return {"source": described, "url": config.model.init_from,
            **warmstart.transfer(source, model, list(config.model.restore) if config.model.restore else None)}


def share_cores(local_size: int) -> int:
    """Split this host's cores between the ranks on it, so they do not fight over them."""
    threads = max(1, (os.cpu_count() or 1) // max(1, local_size))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    return threads


def image_shape(manifest: Manifest) -> tuple[int, int, int]:
    if not manifest.image_shape:
        raise UsageError(f"images in {manifest.name} differ in size; "
                         "re-ingest with a fixed size")
    return tuple(manifest.image_shape)
