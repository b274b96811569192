"""Rank 0 at the end of a run: test metrics from the summed scores, the exported model, the
plots and the report (one path for one head or several)."""
from __future__ import annotations

import json
import os
import time

from trainer.input.model_input import ModelInput
from trainer.model import heads as heads_lib
from trainer.results import batch_grid, metrics, plots, scores
from trainer.results.export import export_model


def finish(storage, config, model, scored: dict, heads: list, model_input: ModelInput, started: float,
           report: dict) -> dict:
    """`scored`: {head name: (confusion matrix, score histogram)} summed over ranks; `report`:
    the fields every report has (train.py); `model_input`: what the model was trained on."""
    result = scores.test_metrics(scored, heads)
    model_url, report_url = config.outputs.model_url(), config.outputs.report_url()
    export_model(storage, model, model_url, config.local_dir(0, "export"), heads, model_input)
    if not heads_lib.single(heads):
        report = {**report, "heads": {h.attribute: h.classes for h in heads}}
    report = {**report, "test": result, "model_dir": model_url,
              "standardization": model_input.standardize.to_json(),
              "batches": {name: url for name, url in batch_grid.batch_urls(report_url).items()
                          if storage.exists(url)},        # written at the start (a resumed run's: earlier)
              "plots": write_plots(storage, report, scored, heads, result, report_url,
                                   config.local_dir(0, "plots")),
              "wall_seconds": round(time.monotonic() - started, 1)}
    storage.write_text(report_url, json.dumps(report, indent=2))
    print_result(result, scored, heads)
    print(f"test accuracy {result['accuracy']:.4f}"
          f"{'' if heads_lib.single(heads) else f' (mean of {len(heads)} heads)'} on "
          f"{result['examples']} images; model {model_url}; report {report_url}; "
          f"{report['wall_seconds']:.0f} s", flush=True)
    return report


def print_result(result: dict, scored: dict, heads: list) -> None:
    for h in heads:
        if not heads_lib.single(heads):
            print(f"{h.attribute}: test accuracy {result['heads'][h.attribute]['accuracy']:.4f}")
        print(metrics.format_confusion(scored[h.name][0], h.classes))


def write_plots(storage, report, scored, heads, result, report_url, local_dir) -> dict:
    """PNG files beside the report: training curves, and per head its confusion matrix (and
    ROC/PR for two classes); named confusion_matrix.png for one head on `label`,
    confusion_matrix_<attribute>.png for several."""
    made = {}
    if report["history"]:
        made["training_curves"] = plots.training_curves(report["history"], report.get("samples") or [],
                                                        os.path.join(local_dir, "training_curves.png"))
    for h in heads:
        suffix = h.prefix and f"_{h.attribute}"
        name = f"confusion_matrix{suffix}"
        made[name] = plots.confusion_matrix(scored[h.name][0], h.classes, os.path.join(local_dir, f"{name}.png"))
        binary = scores.head_result(result, heads, h).get("binary")
        if binary:
            made[f"roc_pr{suffix}"] = plots.roc_pr(binary, os.path.join(local_dir, f"roc_pr{suffix}.png"))
    return plots.upload_beside(storage, made, report_url)
