"""Several heads: one network, one classifier per label attribute of a multi-label dataset.

`--heads eye_color,hair` (or `all`) on a dataset whose manifest has `label_attributes` replaces
the model's single "head" layer by one Dense layer per attribute, `head_<attribute>`, on the same
features. Labels come from the records' `label/<attribute>` features; outputs, losses, metrics and
labels are dicts keyed by the head's layer name, which is also the Keras output name, so logs read
`head_<attribute>_accuracy`. Everything else (body layer names, --init-from, --freeze
all-but-head, checkpoints) is as for one head."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time

import numpy as np
import tensorflow as tf

from pipeline.manifest import Manifest
from pipeline.storage import join
from trainer import evaluate, report as plots
from trainer.errors import UsageError
from trainer.export import export_model
from trainer.models import HEAD
from trainer.objective import balanced_weights, make_loss

ALL = "all"
LAYER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")   # what TensorFlow accepts in op names


@dataclasses.dataclass(frozen=True)
class Head:
    attribute: str
    classes: list
    weight: float = 1.0           # of this head's loss in the sum

    @property
    def name(self) -> str:          # layer name, Keras output name, key of labels and logs
        return f"{HEAD}_{self.attribute}"


def choose(spec: str | None, manifest: Manifest, weights: str | None = None) -> list[Head]:
    """The heads `--heads` asks for ([] without the flag: one head on `label`, as always), with
    their loss weights from `--head-weights attribute=weight,...` (1 for those not named)."""
    if spec is None:
        if weights:
            raise UsageError("--head-weights needs --heads")
        return []
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


def attach(model: tf.keras.Model, heads: list[Head], weight_decay: float) -> tf.keras.Model:
    """The same body (same layers, same names) with one head per attribute instead of "head"."""
    features = model.get_layer(HEAD).input
    reg = tf.keras.regularizers.l2(weight_decay) if weight_decay else None
    outputs = {h.name: tf.keras.layers.Dense(len(h.classes), kernel_regularizer=reg,
                                             name=h.name)(features) for h in heads}
    return tf.keras.Model(model.inputs, outputs, name=model.name)


def compile_args(heads: list[Head], manifest: Manifest, label_smoothing: float,
                 class_weights: str) -> dict:
    """Loss and metrics for model.compile: one cross-entropy per head, summed with the heads'
    weights (1 unless --head-weights says otherwise);
    balanced class weights (if asked) per attribute, applied inside each head's loss because
    Keras's class_weight only works for a model with one output."""
    losses = {}
    for h in heads:
        weights = None
        if class_weights == "balanced":
            counts = manifest.splits["train"].attribute_counts.get(h.attribute, [])
            weights = balanced_weights(counts, f"--class-weights balanced: attribute {h.attribute} "
                                               f"of {manifest.name}")
        losses[h.name] = make_loss(len(h.classes), label_smoothing, weights)
    metrics = {h.name: [tf.keras.metrics.SparseCategoricalAccuracy("accuracy")] for h in heads}
    return {"loss": losses, "metrics": metrics, "loss_weights": {h.name: h.weight for h in heads}}


class HeadLogs(tf.keras.callbacks.Callback):
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


def outputs(heads: list[Head]) -> dict[str, str]:
    """{model output name: attribute}: what the input pipeline puts in each label dict."""
    return {h.name: h.attribute for h in heads}


def score(model, dataset, heads: list[Head], allreduce) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every rank scores its part of the split; per head, the confusion matrices and score
    histograms of all ranks are summed with `allreduce(array, name)` (a collective)."""
    sums = {h.name: evaluate.empty_scores(len(h.classes)) for h in heads}
    for images, labels in dataset:
        logits = model(images, training=False)
        for h in heads:
            evaluate.add_scores(*sums[h.name], labels[h.name].numpy(), logits[h.name].numpy())
    return {name: tuple(np.asarray(allreduce(part, f"test_{kind}_{name}")).astype(np.int64)
                        for kind, part in zip(("confusion", "scores"), parts))
            for name, parts in sums.items()}


def test_metrics(scored: dict, heads: list[Head]) -> dict:
    """Per attribute what a one-head run reports; `accuracy` is the mean over the heads (what
    the nightly job compares)."""
    per_head = {}
    for h in heads:
        matrix, hist = scored[h.name]
        per_head[h.attribute] = evaluate.metrics(matrix, h.classes)
        if len(h.classes) == 2:
            per_head[h.attribute]["binary"] = evaluate.roc_pr(hist, h.classes)
    accuracies = [m["accuracy"] for m in per_head.values()]
    return {"accuracy": sum(accuracies) / len(accuracies),
            "examples": next(iter(per_head.values()))["examples"], "heads": per_head}


def write_plots(storage, history, scored, heads, result, report_url, local_dir) -> dict:
    """Training curves (loss, mean accuracy) plus, per attribute, its confusion matrix (and
    ROC/PR for two classes), uploaded beside the report."""
    made = {}
    if history:
        made["training_curves"] = plots.training_curves(history, os.path.join(local_dir,
                                                                              "training_curves.png"))
    for h in heads:
        name = f"confusion_matrix_{h.attribute}"
        made[name] = plots.confusion_matrix(scored[h.name][0], h.classes,
                                            os.path.join(local_dir, f"{name}.png"))
        if "binary" in result["heads"][h.attribute]:
            name = f"roc_pr_{h.attribute}"
            made[name] = plots.roc_pr(result["heads"][h.attribute]["binary"],
                                      os.path.join(local_dir, f"{name}.png"))
    return plots.upload_beside(storage, made, report_url)


def finish(storage, args, model, scored: dict, heads: list[Head], shape, standardize,
           started: float, run: dict) -> dict:
    """Rank 0 at the end of a run with several heads: test metrics per attribute from `scored`
    (summed over ranks), the exported model, the plots and the report (`run`: the fields every
    report has, from train.py)."""
    result = test_metrics(scored, heads)
    model_url = args.model_dir or join(args.checkpoint_dir, "model")
    export_model(storage, model, model_url, os.path.join(args.cache_dir, "export"), shape,
                 [], standardize, {h.name: (h.attribute, h.classes) for h in heads})
    report_url = args.report or join(args.checkpoint_dir, "report.json")
    report = {**run, "heads": {h.attribute: h.classes for h in heads}, "test": result,
              "model_dir": model_url, "standardization": standardize.to_json(),
              "plots": write_plots(storage, run["history"], scored, heads, result, report_url,
                                   os.path.join(args.cache_dir, "plots")),
              "wall_seconds": round(time.monotonic() - started, 1)}
    storage.write_text(report_url, json.dumps(report, indent=2))
    for h in heads:
        print(f"{h.attribute}: test accuracy {result['heads'][h.attribute]['accuracy']:.4f}")
        print(evaluate.format_confusion(scored[h.name][0], h.classes))
    print(f"test accuracy {result['accuracy']:.4f} (mean of {len(heads)} heads) on "
          f"{result['examples']} images; model {model_url}; report {report_url}; "
          f"{report['wall_seconds']:.0f} s", flush=True)
    return report
