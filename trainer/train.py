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
from trainer import data, evaluate
from trainer.checkpoints import CheckpointStore
from trainer.models import MODELS, build_model
from trainer.progress import AverageNonTrainable, EpochCheckpoint, ProgressLogger
from trainer.schedule import WarmupCosine


class UsageError(Exception):
    """The dataset or flags cannot be trained on as given; the message says why."""


def train(args) -> dict | None:
    started = time.monotonic()
    storage = Storage(endpoint_url=args.s3_endpoint_url)
    if args.model not in MODELS:                          # fail before any process waits on others
        raise UsageError(f"unknown model {args.model!r} (choose from: {', '.join(sorted(MODELS))})")
    manifest = read_manifest(storage, args.dataset)
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    threads = share_cores(hvd.local_size())
    shape = image_shape(manifest)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"training {args.model} on {manifest.name}: {size} processes x {args.batch_size} images, "
        f"{threads} thread(s) each, image {shape}, {len(manifest.classes)} classes", flush=True)

    # Input: every rank reads its own files; every rank takes the same number of steps.
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
        threads=threads, shard_records=train_files[1])

    # Model, optimizer, schedule: LR scaled by the world size with a warm-up (Goyal et al.).
    tf.keras.utils.set_random_seed(args.seed)   # same initial weights on every rank
    model = build_model(args.model, shape, len(manifest.classes), args.weight_decay)
    schedule = WarmupCosine(args.lr, size, int(args.warmup_epochs * steps), args.epochs * steps)
    optimizer = hvd.DistributedOptimizer(
        tf.keras.optimizers.legacy.SGD(learning_rate=schedule, momentum=args.momentum))
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    # Resume: rank 0 finds the newest complete checkpoint; every rank restores the same one.
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    store = CheckpointStore(storage, args.checkpoint_dir,
                            os.path.join(args.cache_dir, "checkpoints"), args.keep_checkpoints)
    latest = hvd_tf.broadcast_object(store.latest() if rank == 0 else None, root_rank=0)
    if latest is not None:
        optimizer._create_all_weights(model.trainable_variables)   # so slots restore at once
        store.restore(checkpoint, latest, rank)
        say(f"resumed from {join(args.checkpoint_dir, store.name(latest))} (epoch {latest})", flush=True)
    initial_epoch = int(epoch_var.numpy())

    history: list[dict] = []
    callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0),
                 hvd.callbacks.MetricAverageCallback(),
                 AverageNonTrainable(lambda v, name: hvd_tf.allreduce(v, op=hvd_tf.Average, name=name))]
    if rank == 0:
        callbacks += [ProgressLogger(args.epochs, steps, args.batch_size * size, args.log_every, history),
                      EpochCheckpoint(store, checkpoint, epoch_var,
                                      {"dataset": args.dataset, "world_size": size})]
    validation = None
    if val_files[0] and manifest.splits["validation"].num_records >= args.batch_size * size:
        validation = dict(
            validation_data=data.eval_dataset(val_files[0], shape, batch_size=args.batch_size,
                                              threads=threads, shard_records=val_files[1], repeat=True),
            validation_steps=manifest.splits["validation"].num_records // (args.batch_size * size))
    if initial_epoch < args.epochs:
        model.fit(train_ds, epochs=args.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=0, **(validation or {}))

    # Test split: each rank scores its files, the confusion matrices are summed.
    test_ds = data.eval_dataset(test_files[0], shape, batch_size=256, threads=threads,
                                shard_records=test_files[1])
    matrix = hvd_tf.allreduce(evaluate.confusion_matrix(model, test_ds, len(manifest.classes)),
                              op=hvd_tf.Sum, name="test_confusion").numpy().astype(np.int64)
    print(f"rank {rank} weights sha256 {weights_digest(model)}", flush=True)
    if rank != 0:
        return None
    result = evaluate.metrics(matrix, manifest.classes)
    model_url = args.model_dir or join(args.checkpoint_dir, "model")
    export_model(storage, model, model_url, os.path.join(args.cache_dir, "export"))
    report = {"dataset": args.dataset, "model": args.model, "world_size": size,
              "epochs": args.epochs, "resumed_from_epoch": latest, "steps_per_epoch": steps,
              "global_batch": args.batch_size * size, "history": history, "test": result,
              "model_dir": model_url, "wall_seconds": round(time.monotonic() - started, 1)}
    storage.write_text(args.report or join(args.checkpoint_dir, "report.json"),
                       json.dumps(report, indent=2))
    print(evaluate.format_confusion(matrix, manifest.classes))
    print(f"test accuracy {result['accuracy']:.4f} on {result['examples']} images; "
          f"model {model_url}; report {args.report or join(args.checkpoint_dir, 'report.json')}; "
          f"{report['wall_seconds']:.0f} s", flush=True)
    return report


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


def export_model(storage: Storage, model, url: str, local_root: str) -> None:
    """SavedModel to local disk, upload every file, then a COMMITTED marker last."""
    import shutil

    local = os.path.join(local_root, "model")
    shutil.rmtree(local, ignore_errors=True)
    model.save(local, include_optimizer=False, save_format="tf")
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            storage.upload(path, join(url, os.path.relpath(path, local)))
    storage.write_text(join(url, "COMMITTED"), "")
