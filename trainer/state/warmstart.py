"""Transfer learning: initialise a model from an earlier run or a weights file, layer by layer,
and freeze layers.

The source is a SavedModel directory (what the trainer exports to <checkpoint-dir>/model), a
checkpoint directory holding COMMITTED checkpoints (the newest is used), or a Keras weights file
(.h5 / .keras, e.g. ImageNet weights saved elsewhere from keras.applications). Weights are
copied for every layer whose name and weight shapes match; a head sized for other classes (or
the ImageNet classifier "predictions", which our models do not have) is left out.

Warm start restores weights only and never runs code that came with them: a model is data from
a bucket, and every rank holds the store's credentials. A SavedModel is never loaded as a model
(keras.models.load_model revives Lambda layers by running their Python; tf.saved_model.load
runs the graph's initialisers): its variables are read from its checkpoint by name. A checkpoint
is restored into a model our own code builds; an HDF5 file is read as arrays; a .keras file is
loaded with safe_mode (Keras refuses its Lambda layers).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import zipfile

import h5py
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf.trackable_object_graph_pb2 import TrackableObjectGraph

from pipeline.dataset.local_paths import path_under, relative_key
from pipeline.dataset.storage import Storage, join
from trainer.config import TrainConfig
from trainer.errors import UsageError
from trainer.keras import keras
from trainer.model import backbones, heads
from trainer.model.models import HEAD, MODEL_NAMES, build_model
from trainer.state.checkpoints import MARKER, CheckpointStore

ALL_BUT_HEAD = "all-but-head"
WEIGHTS_FILES = (".h5", ".hdf5", ".keras")


@dataclasses.dataclass(frozen=True)
class LayerWeights:
    """What a source offers to transfer: weight arrays by layer name, in the layer's order, or
    (a SavedModel's checkpoint) by variable name, "block1_conv/kernel"."""
    name: str
    layers: dict[str, list[np.ndarray]]
    variables: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, model: keras.Model) -> "LayerWeights":
        return cls(model.name, {layer.name: layer.get_weights() for layer in model.layers if layer.weights})

    def weights_for(self, layer) -> list[np.ndarray] | None:
        """The arrays for `layer`'s weights, in its order; None if the source lacks one."""
        if layer.name in self.layers:
            return self.layers[layer.name]
        names = [w.name.rsplit(":", 1)[0] for w in layer.weights]
        if names and all(n in self.variables for n in names):
            return [self.variables[n] for n in names]
        return None


def from_config(storage: Storage, config: TrainConfig, model: keras.Model, rank: int) -> dict:
    """--init-from (and --restore) into `model`: what was loaded, and which layers were restored
    and which start new."""
    url = config.model.init_from
    source, described = load_source(storage, url, config.local_dir(rank, "warmstart"), rank)
    restore = list(config.model.restore) if config.model.restore else None
    return {"source": described, "url": url, **transfer(source, model, restore)}


def load_source(storage: Storage, url: str, local_dir: str, rank: int = 0) -> tuple[LayerWeights, str]:
    """(the source's weights by layer, a description of what was loaded)."""
    local_dir = os.path.join(local_dir, f"init-{rank}")
    if storage.exists(join(url, "saved_model.pb")):
        return saved_model_weights(storage, url, os.path.join(local_dir, "savedmodel")), f"SavedModel {url}"
    if url.lower().endswith(WEIGHTS_FILES):
        return load_weights_file(storage, url, local_dir)
    store = CheckpointStore(storage, url, local_dir)
    step = store.latest()
    if step is None:
        raise UsageError(f"--init-from {url}: neither a SavedModel (no saved_model.pb), a Keras "
                         f"weights file ({', '.join(WEIGHTS_FILES)}) nor a checkpoint directory "
                         f"(no ckpt-NNNNNNNN/{MARKER})")
    marker = store.marker(step)
    if not {"model", "image_shape", "classes"} <= marker.keys() or marker["model"] not in MODEL_NAMES:
        raise UsageError(f"--init-from {url}: checkpoint {store.name(step)} does not say which "
                         "model it holds (written by an older trainer); use its exported SavedModel")
    model = build_model(marker["model"], marker["image_shape"], len(marker["classes"]))
    if marker.get("heads"):             # trained with --heads: the same heads, so names match
        model = heads.attach(model, [heads.Head(a, c) for a, c in marker["heads"].items()], 0)
    store.restore(tf.train.Checkpoint(model=model), step, rank)
    return LayerWeights.of(model), f"checkpoint {join(url, store.name(step))} ({marker['model']})"


def saved_model_weights(storage: Storage, url: str, local: str) -> LayerWeights:
    """A SavedModel's variables by name, read from its variables/ checkpoint (the only files
    fetched): the model itself is never loaded, so none of its code runs."""
    shutil.rmtree(local, ignore_errors=True)
    for file_url, _ in storage.list(url):
        key = relative_key(url, file_url)
        if key.startswith("variables/"):      # the bucket's keys: refused if they leave `local`
            storage.download(file_url, path_under(local, key))
    try:
        variables = checkpoint_variables(os.path.join(local, "variables", "variables"))
    except (tf.errors.OpError, ValueError) as e:
        raise UsageError(f"--init-from {url}: its variables/ checkpoint cannot be read "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return LayerWeights(url, {}, variables)


def checkpoint_variables(prefix: str) -> dict[str, np.ndarray]:
    """{variable name: array} of a TF2 checkpoint, from the object graph it stores beside the
    tensors (each variable's full name and key). A name held by two variables is left out:
    which one would be meant is unknown."""
    reader = tf.train.load_checkpoint(prefix)
    graph = TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    keys: dict[str, list[str]] = {}
    for node in graph.nodes:
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE" and attribute.full_name:
                keys.setdefault(attribute.full_name, []).append(attribute.checkpoint_key)
    return {name: reader.get_tensor(found[0]) for name, found in keys.items() if len(found) == 1}


def load_weights_file(storage: Storage, url: str, local_dir: str) -> tuple[LayerWeights, str]:
    """A whole Keras model (.keras zip from model.save) or an HDF5 weights file by layer name:
    model.save_weights("x.h5"), model.save("x.h5"), and keras.applications' own ImageNet files."""
    if not storage.exists(url):
        raise UsageError(f"--init-from {url}: no such file")
    local = path_under(local_dir, os.path.basename(url))
    storage.download(url, local)
    if zipfile.is_zipfile(local):
        try:        # safe_mode: Keras refuses to deserialise a Lambda layer's Python
            model = keras.models.load_model(local, compile=False, safe_mode=True)
        except ValueError as e:
            raise UsageError(f"--init-from {url}: Keras refused to load it safely "
                             f"({str(e).splitlines()[0][:200]})") from None
        return LayerWeights.of(model), f"Keras model file {url}"
    if not h5py.is_hdf5(local):
        raise UsageError(f"--init-from {url}: neither an HDF5 weights file nor a .keras model file")
    with h5py.File(local, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f     # model.save("x.h5") nests them
        if not _attribute(group, "layer_names"):
            raise UsageError(f"--init-from {url}: these weights are stored by position, not by layer "
                             "name (the .weights.h5 layout); load them into the keras.applications "
                             "model and save_weights('x.h5') with tf-keras, or pass the .keras model file")
        found = {name: [np.asarray(group[name][w]) for w in _attribute(group[name], "weight_names")]
                 for name in _attribute(group, "layer_names")}
    weights = LayerWeights(os.path.basename(url), {k: v for k, v in found.items() if v})
    return weights, f"Keras weights file {url}"


def _attribute(group, key: str) -> list[str]:
    """A list attribute of Keras's HDF5 layout; Keras splits long ones into key0, key1, ..."""
    chunks = [group.attrs[key]] if key in group.attrs else []
    while f"{key}{len(chunks)}" in group.attrs:
        chunks.append(group.attrs[f"{key}{len(chunks)}"])
    return [v.decode() if isinstance(v, bytes) else str(v) for chunk in chunks for v in chunk]


def transfer(source: LayerWeights | keras.Model, target: keras.Model,
             prefixes: list[str] | None = None) -> dict:
    """Copy weights of same-named, same-shaped layers (only those starting with one of `prefixes`
    when given). Returns {"restored": [...], "new": {layer: reason}}."""
    source = source if isinstance(source, LayerWeights) else LayerWeights.of(source)
    restored, new = [], {}
    for layer in target.layers:
        if not layer.weights or layer.name in backbones.INPUT_CONSTANTS:   # set by the model itself
            continue
        theirs = source.weights_for(layer)
        if prefixes is not None and not layer.name.startswith(tuple(prefixes)):
            new[layer.name] = "not selected by --restore"
        elif theirs is None:
            new[layer.name] = "not in the source model"
        elif [w.shape for w in theirs] != [tuple(w.shape) for w in layer.weights]:
            new[layer.name] = "shape differs (e.g. another class count)"
        else:
            layer.set_weights(theirs)
            layer.finalize_state()         # a Normalization layer recomputes from its weights
            restored.append(layer.name)
    if not restored:
        raise UsageError(f"--init-from: no layer of {source.name!r} matches {target.name!r} by name "
                         "and shape; is it the same --model?")
    return {"restored": restored, "new": new}


def freeze(model: keras.Model, spec: str, unfreeze_top: int = 0) -> list[str]:
    """Make layers untrainable: `spec` is "all-but-head" or comma-separated layer-name prefixes;
    then, for a backbone, the top `unfreeze_top` blocks trainable again (their batch norm stays
    frozen). Returns the frozen layers. Call before compile: a BatchNormalization layer with
    trainable=False runs in inference mode in Keras 2 (its moving statistics stay as loaded),
    and the training step is traced with the flags as they are then."""
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
    if unfreeze_top:
        unfreeze(model, unfreeze_top)
    return [layer.name for layer in chosen if not layer.trainable]


def unfreeze(model: keras.Model, top: int) -> list[str]:
    """Make the top `top` blocks of a backbone trainable, except their batch-norm layers: those
    keep running in inference mode with the statistics the weights came with (the Keras
    fine-tuning guide's advice: a few small per-GPU batches would wreck ImageNet's statistics).
    Returns the blocks' names, top first."""
    if model.name not in backbones.BACKBONES:
        raise UsageError(f"--unfreeze-top: {model.name} has no blocks; it works for the backbones "
                         f"({', '.join(sorted(backbones.BACKBONES))}); name layers with --freeze instead")
    found = backbones.blocks(model.name, model)
    if top > len(found):
        raise UsageError(f"--unfreeze-top {top}: {model.name} has {len(found)} blocks "
                         f"({', '.join(name for name, _ in found)})")
    for _, block in found[-top:]:
        for layer in block:
            if not isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
    return [name for name, _ in reversed(found[-top:])]


def describe_frozen(model: keras.Model, frozen: list[str]) -> str:
    """The console's line: every frozen layer for a small model; for a backbone, the count and
    what still trains (a ResNet-50 base has 160 weighted layers)."""
    if len(frozen) <= 12:
        return ", ".join(frozen)
    frozen_set = set(frozen)
    training = [layer.name for layer in model.layers if layer.weights and layer.name not in frozen_set]
    return f"{len(frozen)} layers ({frozen[0]} ... {frozen[-1]}); trained: {', '.join(training) or 'none'}"
