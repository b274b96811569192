"""End-of-run plots are bounded and never fail a run (issue 26, item 9): a confusion matrix of
100 classes is drawn at the size of one of 30 (the most confused ones), a class named `$\\dog$`
is drawn as written (matplotlib's math raised ValueError), and a plot that cannot be made leaves
the run successful with its report.json written (the trainer for real)."""
import json
import os
import struct

import numpy as np

from benchmarks.trainer_dataset import build
from tests.conftest import run_cli
from trainer.results import plots


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_a_class_named_like_math_is_drawn_as_written(tmp_path):
    classes = ["cat", "$\\dog$", "a$b", "$$", "x" * 5000]
    matrix = np.random.default_rng(0).integers(0, 20, (5, 5))
    assert png_size(plots.confusion_matrix(matrix, classes, str(tmp_path / "cm.png")))[0] < 2000
    curves = {"positive_class": "$\\dog$", "roc_auc": 0.5, "average_precision": 0.5,
              "roc": {"fpr": [0, 1], "tpr": [0, 1]}, "pr": {"recall": [0, 1], "precision": [1, 0.5]}}
    assert os.path.exists(plots.roc_pr(curves, str(tmp_path / "roc.png")))


def test_the_confusion_matrix_of_many_classes_stays_the_size_of_thirty(tmp_path):
    rng = np.random.default_rng(1)
    matrix = np.diag(rng.integers(50, 100, 100)) + rng.integers(0, 2, (100, 100))
    matrix[7, 3] = matrix[3, 7] = 40                     # the most confused pair is shown
    path = plots.confusion_matrix(matrix, [f"class {i}" for i in range(100)], str(tmp_path / "cm.png"))
    thirty = plots.confusion_matrix(matrix[:30, :30], [f"class {i}" for i in range(30)], str(tmp_path / "30.png"))
    assert png_size(path) == png_size(thirty) and max(png_size(path)) <= 2100, png_size(path)
    assert {3, 7} <= set(plots.most_confused(matrix, 30))


def test_a_plot_that_cannot_be_made_leaves_the_run_and_its_report(tmp_path):
    from trainer.config import TrainConfig
    from trainer.flags import parser

    dataset = str(tmp_path / "fmnist")
    build(dataset, train=64, test=16, shards=1)
    flags = ["--dataset", dataset, "--checkpoint-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
             "--epochs", "1", "--batch-size", "16", "--no-tensorboard", "--precise-bn", "0"]
    where = TrainConfig.from_args(parser().parse_args(flags)).local_dir(0, "plots")
    os.makedirs(os.path.dirname(where))
    with open(where, "w") as f:                  # a file where the plots' folder goes: no plot can be saved
        f.write("in the way")
    result = run_cli(["trainer", *flags], timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "warning: plot confusion_matrix not made" in result.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["test"]["examples"] == 16 and report["plots"] == {}
    assert set(report["plot_errors"]) == {"training_curves", "confusion_matrix", "precision_recall", "mistakes"}
