"""The end-of-run pictures: training curves, the confusion matrix, precision and recall per
class, ROC/PR for binary tasks (PNG); the mistakes are in mistakes.py.

Bounded whatever the data: a confusion matrix shows at most MAX_CLASSES classes (for a larger
label set, those most confused), so the figure stays the same size for 300 classes as for 30
(its area grew with the square of the class count: 100 classes took 1.7 GB); class names are
shown as written, never as matplotlib's math (a class called `$\\dog$` raised ValueError)."""
from __future__ import annotations

import os

import numpy as np

from pipeline.dataset.storage import join


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")            # no display on training nodes
    import matplotlib.pyplot as plt
    return plt


def training_curves(history: list[dict], samples: list[dict], path: str) -> str:
    """Loss and accuracy per epoch (train and validation), the training loss and the learning
    rate as sampled during the epochs (`samples`: x = epochs done, 1.5 = half-way through the
    second), on an axis of whole epochs."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    if samples:
        axes[0].plot([s["epoch"] for s in samples], [s["loss"] for s in samples], "-", alpha=0.4,
                     linewidth=1, label="train_loss (per step)")
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            values = [h.get(prefix + metric) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=(prefix or "train_") + metric)
        ax.set_title(metric), ax.legend()
    lr = samples or history
    axes[2].plot([s["epoch"] for s in lr], [s.get("lr") for s in lr], "-" if samples else "-o")
    axes[2].set_title("learning rate" + (" (per step)" if samples else " (end of epoch)"))
    for ax in axes:
        ax.set_xlabel("epoch"), ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, plt, path)


MAX_CLASSES = 30              # classes a confusion matrix shows; more: the most confused


def plain(text: str, limit: int = 40) -> str:
    """`text` as matplotlib shows it literally (a `$` would start math, and fail on `\\dog`),
    cut to `limit` characters so that no name can widen a figure without bound."""
    text = str(text)
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def most_confused(matrix: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` classes with the most errors, as true class or as prediction, in
    class order."""
    errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diag(matrix)
    return np.sort(np.argsort(-errors, kind="stable")[:count])


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: str) -> str:
    plt = _pyplot()
    title = "confusion matrix (counts; colour: share of the true class)"
    rows = matrix.sum(axis=1, keepdims=True)      # of all predictions, also those not shown
    if len(classes) > MAX_CLASSES:
        title = (f"confusion matrix: the {MAX_CLASSES} most confused of {len(classes)} classes "
                 "(counts; colour: share of the true class)")
        shown = most_confused(matrix, MAX_CLASSES)
        matrix, rows, classes = matrix[np.ix_(shown, shown)], rows[shown], [classes[i] for i in shown]
    size = max(5, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), [plain(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), [plain(c) for c in classes])
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if value > 0.5 * max(rows[i, 0], 1) else "black")
    return _save(fig, plt, path)


def precision_recall(per_class: dict, path: str) -> str:
    """Per class its precision and recall as bars (metrics.metrics' per_class): where a model
    is good and where it fails, class by class. Over MAX_CLASSES classes, those of lowest F1."""
    plt = _pyplot()
    names = list(per_class)
    title = "precision and recall per class"
    if len(names) > MAX_CLASSES:
        names = sorted(sorted(names, key=lambda n: (per_class[n]["f1"], n))[:MAX_CLASSES], key=list(per_class).index)
        title = f"precision and recall: the {MAX_CLASSES} classes of lowest F1 of {len(per_class)}"
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, max(3, 0.35 * len(names) + 1.5)))
    ax.barh(y - 0.2, [per_class[n]["precision"] for n in names], 0.4, label="precision")
    ax.barh(y + 0.2, [per_class[n]["recall"] for n in names], 0.4, label="recall")
    ax.set_yticks(y, [f"{plain(n)} ({per_class[n]['support']})" for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1), ax.set_xlabel("(support in brackets)"), ax.set_title(title)
    ax.legend(loc="lower right"), ax.grid(axis="x", alpha=0.3)
    return _save(fig, plt, path)


def roc_pr(curves: dict, path: str) -> str:
    plt = _pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.5))
    roc.plot(curves["roc"]["fpr"], curves["roc"]["tpr"])
    roc.plot([0, 1], [0, 1], ":", color="grey")
    roc.set_xlabel("false positive rate"), roc.set_ylabel("true positive rate")
    roc.set_title(f"ROC ({plain(curves['positive_class'])}), AUC {curves['roc_auc']:.3f}")
    pr.plot(curves["pr"]["recall"], curves["pr"]["precision"])
    pr.set_xlabel("recall"), pr.set_ylabel("precision")
    pr.set_title(f"precision-recall, AP {curves['average_precision']:.3f}")
    return _save(fig, plt, path)


def _save(fig, plt, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def upload_beside(storage, made: dict[str, str], report_url: str) -> dict[str, str]:
    """Upload the local PNG files {name: path} next to the report; returns {name: url}."""
    base = report_url.rsplit("/", 1)[0] if "/" in report_url else "."
    urls = {}
    for name, path in made.items():
        urls[name] = join(base, os.path.basename(path))
        storage.upload(path, urls[name])
    return urls
