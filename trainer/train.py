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
from trainer.models import MODELS, build_model
from trainer.profiling import ProfileSteps
from trainer.progress import AverageNonTrainable, EpochCheckpoint, ProgressLogger, UploadDirectory
from trainer.schedule import WarmupDecay

__all__ = ["train", "UsageError"]


def train(args) -> dict | None:
    started = time.monotonic()
    storage = Storage(endpoint_url=args.s3_endpoint_url)
    check_flags(args)                                     # fail before any process waits on others
    manifest = read_manifest(storage, args.dataset)
    chosen = heads.choose(args.heads, manifest, args.head_weights)   # [] = one head on `label`
    outputs = heads.outputs(chosen) or None
    if args.profile:
        os.environ.setdefault("HOROVOD_TIMELINE", "DYNAMIC")   # lets rank 0 start it for a few steps
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    threads = share_cores(hvd.local_size())
    shape = image_shape(manifest)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"training {args.model} on {manifest.name}: {size} processes x {args.batch_size} images, "
        f"{threads} thread(s) each, image {shape}, {len(manifest.classes)} classes", flush=True)
    if chosen:
        say("heads: " + ", ".join(f"{h.attribute} ({len(h.classes)} classes)" for h in chosen), flush=True)

    # Input: every rank reads its own files; every rank takes the same number of steps.
    standardize = data.Standardize.from_manifest(manifest)
    train_files, val_files, test_files = (
        rank_inputs(storage, args, manifest, split, rank, size) for split in ("train", "validation", "test"))
    train_count = manifest.splits["train"].num_records
    steps = train_count // (args.batch_size * size)
    if steps == 0:
        raise UsageError(f"{train_count} training records are fewer than one global "
                         f"batch ({args.batch_size} x {size}); lower --batch-size")
    train_ds = data.training_dataset(
        train_files[0], shape, num_records=train_count // size, batch_size=args.batch_size,
        seed=args.seed + rank, augment=not args.no_augment, flip=not args.no_flip,
        threads=threads, shard_records=train_files[1], standardize=standardize,
        brightness=args.brightness, contrast=args.contrast, outputs=outputs)
    checked = check_input(args, train_ds, shape, len(manifest.classes), steps, say) if args.check_input else None
    if args.check_input == "only":
        return checked

    # Resume wins over --init-from: rank 0 finds the newest complete checkpoint for everyone.
    store = CheckpointStore(storage, args.checkpoint_dir,
                            os.path.join(args.cache_dir, "checkpoints"), args.keep_checkpoints)
    latest = hvd_tf.broadcast_object(store.latest() if rank == 0 else None, root_rank=0)

    # Model (same initial weights on every rank), warm start, frozen layers.
    tf.keras.utils.set_random_seed(args.seed)
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

    # Optimizer and schedule: LR scaled by the world size with a warm-up (Goyal et al.).
    schedule = make_schedule(args, size, steps)
    optimizer = hvd.DistributedOptimizer(objective.make_optimizer(args.optimizer, schedule, args.momentum))
    model.compile(optimizer=optimizer, **(heads.compile_args(
        chosen, manifest, args.label_smoothing, args.class_weights) if chosen else dict(
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy("accuracy")],
            loss=objective.make_loss(len(manifest.classes), args.label_smoothing))))

    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    if latest is not None:
        optimizer._create_all_weights(model.trainable_variables)   # so slots restore at once
        store.restore(checkpoint, latest, rank)
        say(f"resumed from {join(args.checkpoint_dir, store.name(latest))} (epoch {latest})", flush=True)
    initial_epoch = int(epoch_var.numpy())

    history: list[dict] = []
    tensorboard_url = None if args.no_tensorboard else join(args.checkpoint_dir, "tensorboard")
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                 hvd.callbacks.MetricAverageCallback(),
                 AverageNonTrainable(lambda v, name: hvd_tf.allreduce(v, op=hvd_tf.Average, name=name)),
                 StopOnNonFiniteLoss(steps, rank)] + ([heads.HeadLogs(chosen, rank)] if chosen else [])
    if rank == 0:
        meta = {"dataset": args.dataset, "world_size": size, "model": args.model,
                "image_shape": list(shape), "classes": manifest.classes,
                **({"heads": {h.attribute: h.classes for h in chosen}} if chosen else {})}
        callbacks += [ProgressLogger(args.epochs, steps, args.batch_size * size, args.log_every, history),
                      EpochCheckpoint(store, checkpoint, epoch_var, meta)]
        if args.profile:
            profile = os.path.join(args.cache_dir, "profile", f"{os.getpid()}")
            uploader = UploadDirectory(storage, profile, join(args.checkpoint_dir, "profile"))
            callbacks.append(ProfileSteps(profile, hvd_tf, done=uploader.upload))
        if tensorboard_url:
            logs = os.path.join(args.cache_dir, "tensorboard", f"{os.getpid()}")
            callbacks += [tf.keras.callbacks.TensorBoard(logs, update_freq="epoch", profile_batch=0),
                          UploadDirectory(storage, logs, tensorboard_url)]
    validation = None
    if val_files[0] and manifest.splits["validation"].num_records >= args.batch_size * size:
        validation = dict(
            validation_data=data.eval_dataset(val_files[0], shape, batch_size=args.batch_size,
                                              threads=threads, shard_records=val_files[1], repeat=True,
                                              standardize=standardize, outputs=outputs),
            validation_steps=manifest.splits["validation"].num_records // (args.batch_size * size))
    class_weight = (objective.balanced_class_weights(manifest)    # several heads: in their losses
                    if args.class_weights == "balanced" and not chosen else None)
    if initial_epoch < args.epochs:
        model.fit(train_ds, epochs=args.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=0, class_weight=class_weight, **(validation or {}))

    # Test split: each rank scores its files, the confusion matrices (and score histograms) are summed.
    test_ds = data.eval_dataset(test_files[0], shape, batch_size=256, threads=threads,
                                shard_records=test_files[1], standardize=standardize, outputs=outputs)
    if chosen:      # several heads: scored, exported, plotted and reported per attribute
        return heads.finish(
            storage, args, model, test_ds, chosen, rank, shape, standardize, started, weights_digest,
            lambda v, name: hvd_tf.allreduce(v, op=hvd_tf.Sum, name=name).numpy(),
            {"dataset": args.dataset, "model": args.model, "world_size": size, "epochs": args.epochs,
             "resumed_from_epoch": latest, "steps_per_epoch": steps,
             "global_batch": args.batch_size * size, "history": history, "init_from": warm,
             "frozen": frozen, "standardization": standardize.to_json(), "settings": settings(args),
             "tensorboard": tensorboard_url, "input_check": checked})
    matrix, hist = evaluate.score(model, test_ds, len(manifest.classes))
    matrix = hvd_tf.allreduce(matrix, op=hvd_tf.Sum, name="test_confusion").numpy().astype(np.int64)
    hist = hvd_tf.allreduce(hist, op=hvd_tf.Sum, name="test_scores").numpy().astype(np.int64)
    print(f"rank {rank} weights sha256 {weights_digest(model)}", flush=True)
    if rank != 0:
        return None
    result = evaluate.metrics(matrix, manifest.classes)
    if len(manifest.classes) == 2:
        result["binary"] = evaluate.roc_pr(hist, manifest.classes)
    model_url = args.model_dir or join(args.checkpoint_dir, "model")
    export_model(storage, model, model_url, os.path.join(args.cache_dir, "export"), shape,
                 manifest.classes, standardize)
    report_url = args.report or join(args.checkpoint_dir, "report.json")
    report = {"dataset": args.dataset, "model": args.model, "world_size": size,
              "epochs": args.epochs, "resumed_from_epoch": latest, "steps_per_epoch": steps,
              "global_batch": args.batch_size * size, "history": history, "test": result,
              "model_dir": model_url, "init_from": warm, "frozen": frozen,
              "standardization": standardize.to_json(), "settings": settings(args),
              "tensorboard": tensorboard_url, "input_check": checked,
              "plots": write_plots(storage, history, matrix, manifest.classes, result, report_url,
                                   os.path.join(args.cache_dir, "plots")),
              "wall_seconds": round(time.monotonic() - started, 1)}
    storage.write_text(report_url, json.dumps(report, indent=2))
    print(evaluate.format_confusion(matrix, manifest.classes))
    print(f"test accuracy {result['accuracy']:.4f} on {result['examples']} images; "
          f"model {model_url}; report {report_url}; {report['wall_seconds']:.0f} s", flush=True)
    return report


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


def make_schedule(args, size: int, steps: int) -> WarmupDecay:
    boundaries = args.decay_epochs or (args.epochs * 0.5, args.epochs * 0.75)
    return WarmupDecay(args.lr, size, int(args.warmup_epochs * steps), args.epochs * steps,
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
    base = report_url.rsplit("/", 1)[0] if "/" in report_url else "."
    urls = {}
    for name, path in made.items():
        urls[name] = join(base, os.path.basename(path))
        storage.upload(path, urls[name])
    return urls


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


def rank_inputs(storage, args, manifest, split, rank, size):
    """(local shard paths, record-level (num_shards, index) or None) for this rank."""
    if split not in manifest.splits:
        return [], None
    indices = list(range(len(manifest.splits[split].shards)))
    mine, by_record = data.files_for_rank(indices, rank, size)
    paths = data.stage(storage, args.dataset, manifest, split, mine, args.cache_dir)
    return paths, (size, rank) if by_record else None


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]
