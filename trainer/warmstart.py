"""Transfer learning: initialise a model from an earlier run, layer by layer, and freeze layers.

The source is either a SavedModel directory (what the trainer exports to <checkpoint-dir>/model)
or a checkpoint directory holding COMMITTED checkpoints (the newest is used). Weights are copied
for every layer whose name and weight shapes match; a head sized for other classes is left new.
"""
from __future__ import annotations

import os
import shutil

import tensorflow as tf

from pipeline.dataset.storage import Storage, join
from trainer import heads
from trainer.checkpoints import MARKER, CheckpointStore
from trainer.errors import UsageError
from trainer.models import HEAD, MODELS, build_model

ALL_BUT_HEAD = "all-but-head"


def load_source(storage: Storage, url: str, local_dir: str, rank: int = 0) -> tuple[tf.keras.Model, str]:
    """(the source model, a description of what was loaded)."""
    if storage.exists(join(url, "saved_model.pb")):
        local = os.path.join(local_dir, f"init-{rank}", "savedmodel")
        shutil.rmtree(local, ignore_errors=True)
        prefix = url.rstrip("/") + "/"
        for file_url, _ in storage.list(url):
            storage.download(file_url, os.path.join(local, file_url[len(prefix):]))
        return tf.keras.models.load_model(local, compile=False), f"SavedModel {url}"
    store = CheckpointStore(storage, url, os.path.join(local_dir, f"init-{rank}"))
    step = store.latest()
    if step is None:
        raise UsageError(f"--init-from {url}: neither a SavedModel (no saved_model.pb) nor a "
                         f"checkpoint directory (no ckpt-NNNNNNNN/{MARKER})")
    marker = store.marker(step)
    if not {"model", "image_shape", "classes"} <= marker.keys() or marker["model"] not in MODELS:
        raise UsageError(f"--init-from {url}: checkpoint {store.name(step)} does not say which "
                         "model it holds (written by an older trainer); use its exported SavedModel")
    model = build_model(marker["model"], marker["image_shape"], len(marker["classes"]))
    if marker.get("heads"):             # trained with --heads: the same heads, so names match
        model = heads.attach(model, [heads.Head(a, c) for a, c in marker["heads"].items()], 0)
    store.restore(tf.train.Checkpoint(model=model), step, rank)
    return model, f"checkpoint {join(url, store.name(step))} ({marker['model']})"


def transfer(source: tf.keras.Model, target: tf.keras.Model, prefixes: list[str] | None = None) -> dict:
    """Copy weights of same-named, same-shaped layers (only those starting with one of `prefixes`
    when given). Returns {"restored": [...], "new": {layer: reason}}."""
    by_name = {layer.name: layer for layer in source.layers if layer.weights}
    restored, new = [], {}
    for layer in target.layers:
        if not layer.weights:
            continue
        theirs = by_name.get(layer.name)
        if prefixes is not None and not layer.name.startswith(tuple(prefixes)):
            new[layer.name] = "not selected by --restore"
        elif theirs is None:
            new[layer.name] = "not in the source model"
        elif [w.shape for w in theirs.get_weights()] != [w.shape for w in layer.get_weights()]:
            new[layer.name] = "shape differs (e.g. another class count)"
        else:
            layer.set_weights(theirs.get_weights())
            restored.append(layer.name)
    if not restored:
        raise UsageError(f"--init-from: no layer of {source.name!r} matches {target.name!r} by name "
                         "and shape; is it the same --model?")
    return {"restored": restored, "new": new}


def freeze(model: tf.keras.Model, spec: str) -> list[str]:
    """Make layers untrainable: `spec` is "all-but-head" or comma-separated layer-name prefixes."""
    weighted = [layer for layer in model.layers if layer.weights]
    if spec == ALL_BUT_HEAD:
        chosen = [layer for layer in weighted if not layer.name.startswith(HEAD)]
    else:
        prefixes = [p.strip() for p in spec.split(",") if p.strip()]
        unknown = [p for p in prefixes if not any(layer.name.startswith(p) for layer in weighted)]
        if unknown or not prefixes:
            names = ", ".join(layer.name for layer in weighted)
            raise UsageError(f"--freeze {spec!r}: {', '.join(unknown) or 'empty'} matches no layer "
                             f"of {model.name} (layers: {names}; or '{ALL_BUT_HEAD}')")
        chosen = [layer for layer in weighted if layer.name.startswith(tuple(prefixes))]
    for layer in chosen:
        layer.trainable = False
    return [layer.name for layer in chosen]
