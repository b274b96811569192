"""Evaluation across ranks: each rank scores its part of a split, confusion matrices are summed."""
from __future__ import annotations

import numpy as np


SCORE_BINS = 200     # binary tasks: positive-class probabilities are histogrammed per true class
trapezoid = getattr(np, "trapezoid", None) or np.trapz     # numpy >= 2 renamed it; 2.4 removed trapz


def empty_scores(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(confusion matrix, histogram [true class, bin] of class 1's probability), all zeros. Both
    are sums, so ranks that scored different parts of a split add theirs with one allreduce
    each; the histogram (filled for two classes only) is what ROC and PR curves come from."""
    return (np.zeros((num_classes, num_classes), dtype=np.int64),
            np.zeros((num_classes, SCORE_BINS), dtype=np.int64))


def add_scores(matrix: np.ndarray, hist: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> None:
    """Count one batch into the confusion matrix (and, for two classes, the score histogram)."""
    np.add.at(matrix, (labels, np.argmax(logits, axis=1)), 1)
    if logits.shape[1] == 2:
        positive = np.exp(logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1]))
        bins = np.minimum((positive * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
        np.add.at(hist, (labels, bins), 1)


def roc_pr(hist: np.ndarray, classes: list[str]) -> dict:
    """ROC and precision-recall curves of a binary task (class 1 is positive) from score
    histograms; thresholds are the bin edges, from high to low."""
    negatives, positives = hist[0][::-1].cumsum(), hist[1][::-1].cumsum()
    n, p = int(hist[0].sum()), int(hist[1].sum())
    fpr = np.concatenate([[0.0], negatives / max(n, 1)])
    tpr = np.concatenate([[0.0], positives / max(p, 1)])
    predicted = positives + negatives
    precision = np.where(predicted > 0, positives / np.maximum(predicted, 1), 1.0)
    recall = positives / max(p, 1)
    thresholds = (np.arange(SCORE_BINS, 0, -1) - 1) / SCORE_BINS
    return {"positive_class": classes[1], "positives": p, "negatives": n,
            "roc_auc": round(float(trapezoid(tpr, fpr)), 4),
            "average_precision": round(float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision)), 4),
            "roc": {"fpr": rounded(fpr), "tpr": rounded(tpr), "thresholds": rounded(thresholds)},
            "pr": {"precision": rounded(precision), "recall": rounded(recall)}}


def rounded(values) -> list[float]:
    return [round(float(v), 5) for v in values]


def metrics(matrix: np.ndarray, classes: list[str]) -> dict:
    """Accuracy and per-class precision / recall / F1 from a confusion matrix (rows = truth)."""
    total = int(matrix.sum())
    correct = int(np.trace(matrix))
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(matrix[i, i])
        predicted, actual = int(matrix[:, i].sum()), int(matrix[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4),
                           "f1": round(f1, 4), "support": actual}
    return {"accuracy": correct / total if total else 0.0, "examples": total,
            "per_class": per_class, "confusion_matrix": matrix.tolist()}


def format_confusion(matrix: np.ndarray, classes: list[str]) -> str:
    """The confusion matrix for the terminal: a row per true class, named whole after its index,
    and a column per predicted class, headed by that index (so no name is ever cut to a column's
    width, however long)."""
    corner = "true \\ predicted"
    rows = [f"{i:>{len(str(len(classes) - 1))}} {name}" for i, name in enumerate(classes)]
    first = max(len(corner), *(len(row) for row in rows))
    width = max(len(str(int(matrix.max()))), len(str(len(classes) - 1)))
    lines = [f"{corner:<{first}}  " + " ".join(f"{i:>{width}}" for i in range(len(classes)))]
    for row, counts in zip(rows, matrix):
        lines.append(f"{row:<{first}}  " + " ".join(f"{int(v):>{width}}" for v in counts))
    return "\n".join(lines)
