"""Evaluation across ranks: each rank scores its part of a split, confusion matrices are summed."""
from __future__ import annotations

import numpy as np


def confusion_matrix(model, dataset, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for images, labels in dataset:
        predicted = np.argmax(model(images, training=False).numpy(), axis=1)
        np.add.at(matrix, (labels.numpy(), predicted), 1)
    return matrix


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
    short = [c[:9] for c in classes]
    width = max(9, len(str(int(matrix.max()))))
    lines = [" " * 12 + " ".join(f"{s:>{width}}" for s in short)]
    for name, row in zip(short, matrix):
        lines.append(f"{name:>11} " + " ".join(f"{int(v):>{width}}" for v in row))
    return "\n".join(lines)
