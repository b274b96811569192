"""The heads of a run: one classifier per label, on one network. Every run has a list of them.

Without `--heads` the list is one head on the records' primary `label`, the layer "head", and the
model has a single output (as Keras expects for one label). `--heads eye_color,hair` (or `all`) on
a dataset whose manifest has `label_attributes` gives one Dense layer per attribute,
`head_<attribute>`, on the same features; labels come from the records' `label/<attribute>`
features, and outputs, losses, metrics and labels are dicts keyed by the head's layer name (also
the Keras output name, so logs read `head_<attribute>_accuracy`). Everything else (body layer
names, --init-from, --freeze all-but-head, checkpoints) is the same for one head or several."""
from __future__ import annotations

import dataclasses
import re

from pipeline.dataset.manifest import Manifest
from trainer.errors import UsageError
from trainer.keras import keras
from trainer.model.models import HEAD, head_layer
from trainer.model.objective import balanced_class_weights, balanced_weights, make_loss

ALL = "all"
LAYER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")   # what TensorFlow accepts in op names


@dataclasses.dataclass(frozen=True)
class Head:
    attribute: str | None         # None: the primary `label`
    classes: list
    weight: float = 1.0           # of this head's loss in the sum

    @property
    def name(self) -> str:          # layer name, Keras output name, key of labels and logs
        return HEAD if self.attribute is None else f"{HEAD}_{self.attribute}"

    @property
    def prefix(self) -> str:        # of its serving outputs: "" or "<attribute>_"
        return "" if self.attribute is None else f"{self.attribute}_"


def single(heads: list[Head]) -> bool:
    """One head on the primary label: the model's output is one tensor, not a dict."""
    return len(heads) == 1 and heads[0].attribute is None


def choose(spec: str | None, manifest: Manifest, weights: str | None = None) -> list[Head]:
    """The heads `--heads` asks for (without the flag: one head on `label`), with their loss
    weights from `--head-weights attribute=weight,...` (1 for those not named)."""
    if spec is None:
        if weights:
            raise UsageError("--head-weights needs --heads")
        return [Head(None, list(manifest.classes))]
    available = manifest.label_attributes
    if not available:
        raise UsageError(f"--heads {spec}: dataset {manifest.name} has no label attributes "
                         "(it was not ingested from attribute files); leave out --heads")
    listed = ", ".join(sorted(available))
    wanted = [a.strip() for a in spec.split(",") if a.strip()]
    if wanted == [ALL]:
        wanted = sorted(available)
    unknown = [a for a in wanted if a not in available]
    if not wanted:
        raise UsageError(f"--heads {spec!r} names no attribute (available: {listed}, or 'all')")
    if unknown:
        raise UsageError(f"--heads {spec!r}: {', '.join(unknown)} is not a label attribute of "
                         f"{manifest.name} (available: {listed}, or 'all')")
    if len(set(wanted)) != len(wanted):
        raise UsageError(f"--heads {spec!r} names an attribute twice")
    odd = [a for a in wanted if not LAYER_NAME.match(a)]
    if odd:
        raise UsageError(f"--heads: attribute {odd[0]!r} cannot name a layer (letters, digits, "
                         "'_', '.', '-' only); re-ingest with another attribute name")
    weight = loss_weights(weights, wanted)
    return [Head(a, list(available[a]), weight.get(a, 1.0)) for a in wanted]


def loss_weights(spec: str | None, attributes: list[str]) -> dict[str, float]:
    weights = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        attribute, _, value = (part.strip() for part in item.partition("="))
        if attribute not in attributes:
            raise UsageError(f"--head-weights {spec!r}: {attribute!r} is not one of the heads "
                             f"({', '.join(attributes)})")
        try:
            weights[attribute] = float(value)
        except ValueError:
            weights[attribute] = -1.0
        if not weights[attribute] > 0:
            raise UsageError(f"--head-weights {spec!r}: want attribute=weight with a weight > 0, "
                             f"got {item.strip()!r}")
    return weights


def describe(heads: list[Head]) -> str | None:
    """The start line's words for several heads (None for one head on `label`)."""
    if single(heads):
        return None
    return "heads: " + ", ".join(f"{h.attribute} ({len(h.classes)} classes)" for h in heads)


def attach(model: keras.Model, heads: list[Head], weight_decay: float) -> keras.Model:
    """The same body (same layers, same names) with one layer per head instead of "head"."""
    if single(heads):
        return model
    features = model.get_layer(HEAD).input
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    outputs = {h.name: head_layer(len(h.classes), reg, h.name)(features) for h in heads}
    return keras.Model(model.inputs, outputs, name=model.name)


def compile_args(heads: list[Head], manifest: Manifest, label_smoothing: float,
                 class_weights: str) -> dict:
    """Loss and metrics for model.compile: one cross-entropy per head, summed with the heads'
    weights (1 unless --head-weights says otherwise); balanced class weights (if asked) per
    head, applied inside its loss (Keras's class_weight only works for a model with one output;
    inside the loss it is the same sum: weighted per example, averaged over the batch)."""
    losses = {}
    for h in heads:
        weights = None
        if class_weights == "balanced" and h.attribute is None:
            weights = balanced_class_weights(manifest)
        elif class_weights == "balanced":
            counts = manifest.splits["train"].attribute_counts.get(h.attribute, [])
            weights = balanced_weights(counts, f"--class-weights balanced: attribute {h.attribute} "
                                               f"of {manifest.name}")
        losses[h.name] = make_loss(len(h.classes), label_smoothing, weights)
    accuracy = {h.name: [keras.metrics.SparseCategoricalAccuracy("accuracy")] for h in heads}
    if single(heads):
        return {"loss": losses[HEAD], "metrics": accuracy[HEAD]}
    return {"loss": losses, "metrics": accuracy, "loss_weights": {h.name: h.weight for h in heads}}


def label_outputs(heads: list[Head]) -> dict[str, str] | None:
    """{model output name: attribute} the input pipeline puts in each label dict; None for one
    head on `label` (the label is then a plain tensor)."""
    return None if single(heads) else {h.name: h.attribute for h in heads}


class HeadLogs(keras.callbacks.Callback):
    """Adds `accuracy` (and `val_accuracy`): the mean of the heads' accuracies, so the progress
    lines and checkpoint metrics read as for one head; rank 0 prints each head's accuracy at the
    end of every epoch. Place it after MetricAverageCallback (logs are then averaged over ranks)."""

    def __init__(self, heads: list[Head], rank: int):
        super().__init__()
        self.heads, self.rank = heads, rank

    def on_train_batch_end(self, batch, logs=None):
        self._mean(logs, "")

    def on_epoch_end(self, epoch, logs=None):
        for prefix in ("", "val_"):
            self._mean(logs, prefix)
        if self.rank == 0 and logs:
            print(f"epoch {epoch + 1} heads: " + "; ".join(self._shown(h, logs) for h in self.heads),
                  flush=True)

    @staticmethod
    def _shown(head: Head, logs) -> str:
        values = [f"{prefix or 'train_'}acc {logs[key]:.4f}" for prefix in ("", "val_")
                  if (key := f"{prefix}{head.name}_accuracy") in logs]
        return " ".join([head.attribute, *values])

    def _mean(self, logs, prefix):
        if logs is None:
            return
        values = [logs.get(f"{prefix}{h.name}_accuracy") for h in self.heads]
        if values and all(v is not None for v in values):
            logs[f"{prefix}accuracy"] = sum(float(v) for v in values) / len(values)


def callbacks(heads: list[Head], rank: int) -> list:
    return [] if single(heads) else [HeadLogs(heads, rank)]


def by_head(heads: list[Head], values) -> dict:
    """Model outputs or labels as {head name: tensor}, for one head or several."""
    return {heads[0].name: values} if single(heads) else values
