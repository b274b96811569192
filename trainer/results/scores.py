"""The test split scored per head: every rank scores its own part, the sums are added over
ranks, and the metrics come from the sums (trainer/results/metrics.py's arithmetic)."""
from __future__ import annotations

import numpy as np

from trainer.model.heads import HEAD, Head, by_head, single
from trainer.results import metrics


def score(model, dataset, heads: list[Head], allreduce, predictions=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every rank scores its part of the split; per head, the confusion matrices and score
    histograms of all ranks are summed with `allreduce(array, name)` (a collective).
    `predictions` (a predictions.PartWriter; the dataset then yields record ids third) gets every
    row from the same logits, and is uploaded before the collective."""
    sums = {h.name: metrics.empty_scores(len(h.classes)) for h in heads}
    for images, labels, *ids in dataset:
        logits, labels = by_head(heads, model(images, training=False)), by_head(heads, labels)
        for h in heads:
            truth, scores_ = labels[h.name].numpy(), logits[h.name].numpy()
            metrics.add_scores(*sums[h.name], truth, scores_)
            if predictions is not None:
                predictions.add(h, ids[0].numpy(), truth, scores_)
    if predictions is not None:
        predictions.close()
    return {name: tuple(np.asarray(allreduce(part, f"test_{kind}_{name}")).astype(np.int64)
                        for kind, part in zip(("confusion", "scores"), parts))
            for name, parts in sums.items()}


def test_metrics(scored: dict, heads: list[Head]) -> dict:
    """Per head what metrics.metrics reports (plus ROC/PR for two classes). One head on
    `label`: those metrics themselves; several: per attribute, with `accuracy` the mean over
    the heads (what the nightly job compares)."""
    per_head = {}
    for h in heads:
        matrix, hist = scored[h.name]
        per_head[h.name] = metrics.metrics(matrix, h.classes)
        if len(h.classes) == 2:
            per_head[h.name]["binary"] = metrics.roc_pr(hist, h.classes)
    if single(heads):
        return per_head[HEAD]
    accuracies = [m["accuracy"] for m in per_head.values()]
    return {"accuracy": sum(accuracies) / len(accuracies),
            "examples": next(iter(per_head.values()))["examples"],
            "heads": {h.attribute: per_head[h.name] for h in heads}}


def head_result(result: dict, heads: list[Head], head: Head) -> dict:
    """One head's part of test_metrics(...)."""
    return result if single(heads) else result["heads"][head.attribute]
