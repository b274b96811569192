"""The training story, top to bottom, for one Horovod rank (run under horovodrun)."""
from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import tensorflow as tf
import horovod.tensorflow as hvd_tf
import horovod.tensorflow.keras as hvd

from pipeline.manifest import Manifest, read_manifest
from pipeline.storage import Storage, join
from trainer import data, evaluate, heads, inputcheck, objective, report as plots, warmstart
from trainer.checkpoints import CheckpointStore
from trainer.errors import UsageError
from trainer.export import export_model
from trainer.guards import StopOnNonFiniteLoss
from trainer.models import MODELS, build_model, random_generators
from trainer.profiling import ProfileSteps
from trainer.inputs import RankInputs
from trainer.progress import (AverageNonTrainable, Checkpointing, CommitState, Position, ProgressLogger,
                              UploadDirectory)
from trainer.schedule import WarmupDecay

__all__ = ["train", "UsageError"]


def train(args) -> dict | None:
    started = time.monotonic()
    storage = Storage(endpoint_url=args.s3_endpoint_url)
    check_flags(args)                                     # fail before any process waits on others
    manifest = read_manifest(storage, args.dataset)
    chosen = heads.choose(args.heads, manifest, args.head_weights)   # [] = one head on `label`
    if args.profile:
        os.environ.setdefault("HOROVOD_TIMELINE", "DYNAMIC")   # lets rank 0 start it for a few steps
    tf.keras.utils.set_random_seed(args.seed)   # first: the input order and the weights come from it
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
    store = CheckpointStore(storage, args.checkpoint_dir,
                            os.path.join(args.cache_dir, "checkpoints"), args.keep_checkpoints)
    if elastic:
        latest = latest_position(store)
    else:
        latest = hvd_tf.broadcast_object(latest_position(store) if rank == 0 else None, root_rank=0)

    # One global batch for the whole run, also when an elastic run loses or gains processes.
    if elastic and not args.global_batch_size:
        raise UsageError("elastic mode needs --global-batch-size: the global batch must not depend "
                         "on how many processes happen to be there when each one starts")
    global_batch = args.global_batch_size or (latest or {}).get("global_batch") or args.batch_size * size
    train_count = manifest.splits["train"].num_records
    steps = train_count // global_batch
    if steps == 0:
        raise UsageError(f"{train_count} training records are fewer than one global "
                         f"batch ({global_batch}); lower --batch-size")
    say(f"training {args.model} on {manifest.name}: {size} processes, global batch {global_batch}, "
        f"{threads} thread(s) each, image {shape}, {len(manifest.classes)} classes, {steps} steps "
        f"per epoch{', elastic' if elastic else ''}", flush=True)
    if chosen:
        say("heads: " + ", ".join(f"{h.attribute} ({len(h.classes)} classes)" for h in chosen), flush=True)
    run = Run(args, storage, manifest, shape, threads, steps, global_batch)
    run.heads = chosen
    if args.check_input:
        checked = check_input(args, run.inputs(rank, size).training((0, 0)), shape,
                              len(manifest.classes), steps, say)
        if args.check_input == "only":
            return checked
    else:
        checked = None

    # Model (same initial weights on every rank), warm start, frozen layers.
    model = build_model(args.model, shape, len(manifest.classes), args.weight_decay)
    if chosen:
        model = heads.attach(model, chosen, args.weight_decay)
    warm = None
    if args.init_from and latest is None:
        warm = warm_start(storage, args, model, rank)
        say(f"initialised from {warm['source']}: restored {len(warm['restored'])} layers, "
            f"new: {', '.join(warm['new']) or 'none'}", flush=True)
    frozen = warmstart.freeze(model, args.freeze) if args.freeze else []
    if frozen:
        say(f"frozen: {', '.join(frozen)}", flush=True)

    # Optimizer and schedule: LR scaled with the global batch, with a warm-up (Goyal et al.).
    schedule = make_schedule(args, global_batch / args.batch_size, steps)
    optimizer = hvd.DistributedOptimizer(objective.make_optimizer(args.optimizer, schedule, args.momentum))
    model.compile(optimizer=optimizer, **(heads.compile_args(
        chosen, manifest, args.label_smoothing, args.class_weights) if chosen else dict(
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy("accuracy")],
            loss=objective.make_loss(len(manifest.classes), args.label_smoothing))))
    optimizer._create_all_weights(model.trainable_variables)   # slots exist before restore/elastic state
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, rng=random_generators(model))
    start = (0, 0)
    if latest is not None:
        start = resume(store, checkpoint, latest, steps, rank, say)
    optimizer.iterations.assign(start[0] * steps + start[1])     # the schedule follows the position
    run.model, run.checkpoint, run.store = model, checkpoint, store

    if elastic:
        matrix, hist = fit_elastic(run, start)
    else:
        # Every rank starts from rank 0's variables. Before training, not after its first batch
        # as Horovod's callback does: that would also overwrite the other ranks' batch-norm
        # statistics mid-epoch, so a resumed run would not match an uninterrupted one.
        hvd_tf.broadcast_variables(model.variables + optimizer.variables(), root_rank=0)
        matrix, hist = fit_and_score(run, start)

    print(f"rank {hvd.rank()} weights sha256 {weights_digest(model)}", flush=True)
    if hvd.rank() != 0:
        return None
    report = {"dataset": args.dataset, "model": args.model, "world_size": hvd.size(), "elastic": elastic,
              "epochs": args.epochs, "resumed_from": latest, "steps_per_epoch": steps,
              "global_batch": global_batch, "history": run.history, "init_from": warm, "frozen": frozen,
              "settings": settings(args), "tensorboard": run.tensorboard_url, "input_check": checked}
    standardize = data.Standardize.from_manifest(manifest)
    if chosen:      # several heads: `matrix` holds each head's sums; reported per attribute
        return heads.finish(storage, args, model, matrix, chosen, shape, standardize, started, report)
    return finish(storage, args, model, matrix, hist, manifest, standardize, started, report)


def finish(storage, args, model, matrix, hist, manifest, standardize, started, report: dict) -> dict:
    """Rank 0 at the end: test metrics, the exported model, the plots and the report (`report`
    holds the fields every report has)."""
    result = evaluate.metrics(matrix, manifest.classes)
    if len(manifest.classes) == 2:
        result["binary"] = evaluate.roc_pr(hist, manifest.classes)
    model_url = args.model_dir or join(args.checkpoint_dir, "model")
    export_model(storage, model, model_url, os.path.join(args.cache_dir, "export"),
                 tuple(manifest.image_shape), manifest.classes, standardize)
    report_url = args.report or join(args.checkpoint_dir, "report.json")
    report = {**report, "test": result, "model_dir": model_url, "standardization": standardize.to_json(),
              "plots": write_plots(storage, report["history"], matrix, manifest.classes, result,
                                   report_url, os.path.join(args.cache_dir, "plots")),
              "wall_seconds": round(time.monotonic() - started, 1)}
    storage.write_text(report_url, json.dumps(report, indent=2))
    print(evaluate.format_confusion(matrix, manifest.classes))
    print(f"test accuracy {result['accuracy']:.4f} on {result['examples']} images; "
          f"model {model_url}; report {report_url}; {report['wall_seconds']:.0f} s", flush=True)
    return report


def fit_and_score(run: "Run", start: tuple[int, int], extra_callbacks=None) -> tuple[np.ndarray, np.ndarray]:
    """Train from `start` = (epoch, batch) to the last epoch, then score the test split; every
    rank scores its own files and the confusion matrices (and score histograms) are summed."""
    rank, size = hvd.rank(), hvd.size()
    inputs = run.inputs(rank, size)
    position = Position(run.steps, start)
    # Extra callbacks (elastic commits) last: they then commit what the others left, e.g. the
    # batch-norm statistics averaged at the end of an epoch.
    callbacks = [position, *run.callbacks(position, inputs),
                 *(extra_callbacks(position) if extra_callbacks else [])]
    epoch, batch = start
    if batch:        # finish the interrupted epoch first: Keras runs whole epochs only
        run.model.fit(inputs.training(start), epochs=epoch + 1, initial_epoch=epoch,
                      steps_per_epoch=run.steps - batch, callbacks=callbacks, verbose=0,
                      **run.fit_options(inputs))
        epoch, batch = epoch + 1, 0
    if epoch < run.args.epochs:
        run.model.fit(inputs.training((epoch, 0)), epochs=run.args.epochs, initial_epoch=epoch,
                      steps_per_epoch=run.steps, callbacks=callbacks, verbose=0,
                      **run.fit_options(inputs))
    if run.heads:    # {head: (confusion, histogram)}, summed over ranks the same way
        return heads.score(run.model, inputs.test(), run.heads, lambda v, name: hvd_tf.allreduce(
            v, op=hvd_tf.Sum, name=name).numpy()), None
    matrix, hist = evaluate.score(run.model, inputs.test(), len(run.manifest.classes))
    matrix = hvd_tf.allreduce(matrix, op=hvd_tf.Sum, name="test_confusion").numpy().astype(np.int64)
    hist = hvd_tf.allreduce(hist, op=hvd_tf.Sum, name="test_scores").numpy().astype(np.int64)
    return matrix, hist


def fit_elastic(run: "Run", start: tuple[int, int]):
    """Horovod elastic: processes may leave or join. The state (weights, optimizer, position) is
    committed in memory every --commit-every steps; when a process dies, the others roll back
    to the last commit, re-form the ring, re-partition the input and go on."""
    state = hvd.elastic.KerasState(run.model, epoch=start[0], batch=start[1])

    @hvd.elastic.run
    def train_elastic(state):
        print(f"rank {hvd.rank()} of {hvd.size()}: training from epoch {state.epoch + 1} "
              f"batch {state.batch}", flush=True)
        return fit_and_score(run, (state.epoch, state.batch),
                             lambda position: [CommitState(state, position, run.args.commit_every)])

    return train_elastic(state)


class Run:
    """What every fit() of this run shares; inputs and callbacks depend on the current rank."""

    def __init__(self, args, storage, manifest, shape, threads, steps, global_batch):
        self.args, self.storage, self.manifest, self.shape = args, storage, manifest, shape
        self.threads, self.steps, self.global_batch = threads, steps, global_batch
        self.history: list[dict] = []
        self.tensorboard_url = None if args.no_tensorboard else join(args.checkpoint_dir, "tensorboard")
        self.model = self.checkpoint = self.store = None
        self.heads = []      # several heads (--heads): trainer/heads.py

    def inputs(self, rank: int, size: int) -> RankInputs:
        return RankInputs(self.storage, self.args, self.manifest, self.shape, self.threads, self.steps,
                          self.global_batch, rank, size, heads.outputs(self.heads) or None)

    def callbacks(self, position: Position, inputs: RankInputs) -> list:
        args = self.args
        callbacks = [hvd.callbacks.MetricAverageCallback(),
                      AverageNonTrainable(lambda v, name: hvd_tf.allreduce(v, op=hvd_tf.Average, name=name),
                                          position, args.checkpoint_every),
                      StopOnNonFiniteLoss(position, hvd.rank(), inputs.batch_ids),
                      *([heads.HeadLogs(self.heads, hvd.rank())] if self.heads else [])]
        if hvd.rank() != 0:
            return callbacks
        meta = {"dataset": args.dataset, "world_size": hvd.size(), "model": args.model,
                "global_batch": self.global_batch, "image_shape": list(self.shape),
                "classes": self.manifest.classes,
                **({"heads": {h.attribute: h.classes for h in self.heads}} if self.heads else {})}
        callbacks += [ProgressLogger(args.epochs, position, self.global_batch, args.log_every, self.history),
                      Checkpointing(self.store, self.checkpoint, position, args.checkpoint_every, meta)]
        if args.profile:
            profile = os.path.join(args.cache_dir, "profile", f"{os.getpid()}")
            uploader = UploadDirectory(self.storage, profile, join(args.checkpoint_dir, "profile"))
            callbacks.append(ProfileSteps(profile, hvd_tf, done=uploader.upload))
        if self.tensorboard_url:
            logs = os.path.join(args.cache_dir, "tensorboard", f"{os.getpid()}")
            callbacks += [tf.keras.callbacks.TensorBoard(logs, update_freq="epoch", profile_batch=0),
                          UploadDirectory(self.storage, logs, self.tensorboard_url)]
        return callbacks

    def fit_options(self, inputs: RankInputs) -> dict:
        options = {}
        if self.args.class_weights == "balanced" and not self.heads:   # several heads: in their losses
            options["class_weight"] = objective.balanced_class_weights(self.manifest)
        if inputs.validation_count >= self.global_batch:
            options.update(validation_data=inputs.validation(),
                           validation_steps=inputs.validation_count // self.global_batch)
        return options


def latest_position(store: CheckpointStore) -> dict | None:
    """Rank 0: the newest complete checkpoint and the position it holds."""
    step = store.latest()
    if step is None:
        return None
    marker = store.marker(step)
    return {"checkpoint": join(store.url, store.name(step)), "step": step,
            "epoch": marker.get("epoch", 0), "batch": marker.get("batch", 0),
            "steps_per_epoch": marker.get("steps_per_epoch"), "global_batch": marker.get("global_batch")}


def resume(store, checkpoint, latest: dict, steps: int, rank: int, say) -> tuple[int, int]:
    """Restore the newest complete checkpoint; returns the (epoch, batch) to go on from."""
    store.restore(checkpoint, latest["step"], rank)
    epoch, batch = latest["epoch"], latest["batch"]
    if latest["steps_per_epoch"] and latest["steps_per_epoch"] != steps:   # another world size
        batch = batch * steps // latest["steps_per_epoch"]
        say(f"steps per epoch changed from {latest['steps_per_epoch']} to {steps}: going on at the "
            f"same fraction of the epoch, batch {batch}", flush=True)
    say(f"resumed from {latest['checkpoint']}: epoch {epoch + 1}, {batch} of {steps} batches done",
        flush=True)
    return epoch, batch


def check_flags(args) -> None:
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r} (choose from: {', '.join(sorted(MODELS))})")
    if args.restore and not args.init_from:
        raise UsageError("--restore needs --init-from")
    if args.decay_epochs and args.decay != "step":
        raise UsageError("--decay-epochs needs --decay step")
    if args.decay_epochs and max(args.decay_epochs) >= args.epochs:
        raise UsageError(f"--decay-epochs {args.decay_epochs} must lie before --epochs {args.epochs}")


def check_input(args, train_ds, shape, num_classes, steps, say) -> dict:
    """Every rank measures at once (they share the host as in training); rank 0 reports."""
    say("input check: measuring the tf.data pipeline alone, then the model step alone ...", flush=True)
    input_ips = inputcheck.input_rate(train_ds, min(steps, 50), args.batch_size)
    step_ips = inputcheck.step_rate(args.model, shape, num_classes, args.batch_size, 20)
    result = inputcheck.verdict(input_ips, step_ips)
    say(f"input check (per process): {result['verdict']}", flush=True)
    return result


def make_schedule(args, scale: float, steps: int) -> WarmupDecay:
    boundaries = args.decay_epochs or (args.epochs * 0.5, args.epochs * 0.75)
    return WarmupDecay(args.lr, scale, int(args.warmup_epochs * steps), args.epochs * steps,
                       args.decay, [int(e * steps) for e in boundaries], args.decay_factor)


def warm_start(storage, args, model, rank) -> dict:
    source, described = warmstart.load_source(storage, args.init_from,
                                              os.path.join(args.cache_dir, "warmstart"), rank)
    prefixes = [p.strip() for p in args.restore.split(",") if p.strip()] if args.restore else None
    return {"source": described, "url": args.init_from,
            **warmstart.transfer(source, model, prefixes)}


def settings(args) -> dict:
    keys = ("batch_size", "lr", "optimizer", "momentum", "weight_decay", "warmup_epochs", "decay",
            "decay_epochs", "decay_factor", "label_smoothing", "class_weights", "no_flip",
            "no_augment", "brightness", "contrast", "seed", "init_from", "restore", "freeze", "heads",
            "head_weights")
    return {k: getattr(args, k) for k in keys}


def write_plots(storage, history, matrix, classes, result, report_url, local_dir) -> dict:
    """PNG files beside the report: training curves, confusion matrix, ROC/PR (binary tasks)."""
    made = {"confusion_matrix": plots.confusion_matrix(matrix, classes,
                                                       os.path.join(local_dir, "confusion_matrix.png"))}
    if history:
        made["training_curves"] = plots.training_curves(history, os.path.join(local_dir, "training_curves.png"))
    if "binary" in result:
        made["roc_pr"] = plots.roc_pr(result["binary"], os.path.join(local_dir, "roc_pr.png"))
    return plots.upload_beside(storage, made, report_url)


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


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]
