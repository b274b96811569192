"""Rank 0 at the end of a run: test metrics from the summed scores, the exported model, the
plots and the report (one path for one head or several)."""
from __future__ import annotations

import json
import os
import time

from trainer.input.model_input import ModelInput
from trainer.model import heads as heads_lib
from trainer.results import batch_grid, metrics, mistakes, plots, predictions, scores
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
              "standardization": model_input.standardize.to_json(), "plots": {},
              "batches": {name: url for name, url in batch_grid.batch_urls(report_url).items()
                          if storage.exists(url)},        # written at the start (a resumed run's: earlier)
              "wall_seconds": round(time.monotonic() - started, 1)}
    # The report first: a plot that runs out of memory or fails leaves the scores written.
    storage.write_text(report_url, json.dumps(report, indent=2))
    # Every rank uploaded its part before the scores were summed (trainer/results/predictions.py).
    report["predictions"], predicted = predictions.combine(storage, report_url, report["world_size"],
                                                           config.local_dir(0, "predictions"))
    plotted, failed = write_plots(storage, report, scored, heads, result, report_url,
                                  config.local_dir(0, "plots"), predicted)
    os.remove(predicted)
    report = {**report, "plots": plotted, **({"plot_errors": failed} if failed else {})}
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


def write_plots(storage, report, scored, heads, result, report_url, local_dir, predicted: str) -> tuple[dict, dict]:
    """PNG files beside the report: training curves, and per head its confusion matrix,
    precision and recall per class, the most confident mistakes (from the local copy of
    predictions.parquet, `predicted`) and ROC/PR for two classes; named confusion_matrix.png
    for one head on `label`, confusion_matrix_<attribute>.png for several. Returns ({name: url},
    {name: why it failed}): a plot never fails the run."""
    wanted = {}
    if report["history"]:
        wanted["training_curves"] = lambda path: plots.training_curves(
            report["history"], report.get("samples") or [], path)
    for h in heads:
        suffix = h.prefix and f"_{h.attribute}"
        wanted[f"confusion_matrix{suffix}"] = lambda path, h=h: plots.confusion_matrix(scored[h.name][0], h.classes, path)
        per_class = scores.head_result(result, heads, h)["per_class"]
        wanted[f"precision_recall{suffix}"] = lambda path, per_class=per_class: plots.precision_recall(per_class, path)
        wanted[f"mistakes{suffix}"] = lambda path, h=h: mistakes.mistakes_png(
            storage, predicted, predictions.head_name(h), report["dataset"], report.get("dataset_version"), path,
            os.path.join(os.path.dirname(predicted), "index"))
        binary = scores.head_result(result, heads, h).get("binary")
        if binary:
            wanted[f"roc_pr{suffix}"] = lambda path, binary=binary: plots.roc_pr(binary, path)
    plotted, failed = {}, {}
    for name, plot in wanted.items():
        try:
            plotted.update(plots.upload_beside(storage, {name: plot(os.path.join(local_dir, f"{name}.png"))},
                                               report_url))
        except Exception as e:           # a picture is never worth the run (the scores are written)
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            print(f"warning: plot {name} not made: {failed[name]}", flush=True)
    return plotted, failed
