"""What the trainer says at its start and end (issue 29): flag values that need no TensorFlow are
refused before TensorFlow starts, in the trainer and in the nightly; no TensorFlow, absl or
oneDNN banner in `--help`, in a failed launch or in a run, and none from the ranks of a failed
horovodrun (horovodrun's and mpirun's own are left out by the project's launchers); class names
whole in the terminal's confusion matrix. Real commands, the session's S3 server and dataset."""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, run_cli
from trainer.results.metrics import format_confusion

BANNER = re.compile(r"absl::InitializeLog|oneDNN|port\.cc:|cpu_feature_guard|^[IW]\d{4} ", re.M)


def python(code: str) -> tuple[subprocess.CompletedProcess, float]:
    """`code` in a fresh interpreter, as a user's shell starts one; (its result, seconds)."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True, capture_output=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    return result, time.monotonic() - started


def main_of(module: str, argv: list[str]) -> str:
    """Code that runs `module`'s main(argv), then prints whether TensorFlow or Horovod's
    TensorFlow API was imported, and exits with main's code."""
    return (f"import sys; from {module} import main; code = main({argv!r}); "
            "print('tensorflow' in sys.modules, 'horovod.tensorflow' in sys.modules); sys.exit(code)")


@pytest.mark.parametrize("flags, words", [
    (["--model", "nosuch"], "unknown model 'nosuch' (choose from: cnn, cnn4, cnn5, efficientnet_b0, linear,"),
    (["--dataset", "gs://bucket/data"], "--dataset gs://bucket/data: gs:// is not supported"),
    (["--init-from", "hdfs://nn/model"], "--init-from hdfs://nn/model: hdfs:// is not supported"),
    (["--precision", "float8"], "argument --precision: invalid choice: 'float8'"),
    (["--image-size", "4x4"], "argument --image-size: at least 8x8, got 4x4"),
    (["--restore", "conv1"], "--restore needs --init-from"),
    (["--epochz", "3"], "unrecognized arguments: --epochz 3 (see --help)"),
])
def test_a_flag_that_needs_no_tensorflow_fails_in_seconds_without_it(flags, words):
    argv = ["--dataset", "s3://fmnist/datasets/clean", "--checkpoint-dir", "s3://fmnist/runs/x", *flags]
    result, seconds = python(main_of("trainer.__main__", argv))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False"], result.stdout      # neither was imported
    [line] = result.stderr.strip().splitlines()                            # one line, no usage block
    assert line.startswith("trainer: error: ") and words in line, line
    assert seconds < 5, seconds


def test_help_and_a_failed_launch_print_no_tensorflow_banner(tmp_path):
    shown = run_cli(["trainer", "--help"])
    assert shown.returncode == 0 and not BANNER.search(shown.stdout + shown.stderr), shown.stderr
    # A dataset that is not there is found after TensorFlow and Horovod have started.
    failed = run_cli(["trainer", "--dataset", str(tmp_path / "none"), "--checkpoint-dir", str(tmp_path / "run")])
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert failed.stderr.strip().splitlines() == [f"trainer: error: no published dataset at {tmp_path / 'none'}: "
                                                  "manifest.json is missing (shards without a manifest are an "
                                                  "unfinished or crashed ingestion)"], failed.stderr[-2000:]
    verbose = run_cli(["trainer", "--dataset", str(tmp_path / "none"), "--checkpoint-dir", str(tmp_path / "run"),
                       "--verbose"])
    assert verbose.returncode == 2 and BANNER.search(verbose.stderr), verbose.stderr[-2000:]   # asked for


def test_a_failed_horovodrun_shows_one_line_through_the_launchers_filter(tmp_path):
    """The ranks' own output has no banner; horovodrun's (its TensorFlow import, its traceback
    under Gloo) is what the demo and the nightly leave out, so they show the rank's one line."""
    from trainer.banners import LauncherLines

    result = run_cli(["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m", "trainer",
                      "--dataset", str(tmp_path / "none"), "--checkpoint-dir", str(tmp_path / "run")])
    assert result.returncode != 0
    output = (result.stdout + result.stderr).splitlines(keepends=True)
    from_ranks = [line for line in output if re.match(r"\[\d+\]<std(out|err)>:", line)]
    assert from_ranks and not BANNER.search("".join(from_ranks)), "".join(from_ranks)
    shown = []
    for stream in (result.stdout, result.stderr):
        lines = LauncherLines()
        for line in stream.splitlines(keepends=True):
            shown += lines.feed(line)
        shown += lines.flush()
    assert [line.strip() for line in shown if line.strip()] == [
        f"[0]<stderr>:trainer: error: no published dataset at {tmp_path / 'none'}: manifest.json is missing "
        "(shards without a manifest are an unfinished or crashed ingestion)"], "".join(output)


def test_a_run_prints_class_names_whole_and_no_banner(dataset, tmp_path):
    """Fashion-MNIST's names are longer than the 9 characters the table used to cut them to."""
    result = run_cli(["trainer", "--dataset", dataset, "--checkpoint-dir", "s3://fmnist/runs/whole-names",
                      "--epochs", "1", "--batch-size", "32", "--no-tensorboard", "--cache-dir", str(tmp_path)])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert not BANNER.search(result.stdout + result.stderr), result.stderr[-2000:]
    table = result.stdout.split("true \\ predicted")[1]
    for index, name in enumerate(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot"]):
        assert re.search(rf"^{index} {re.escape(name)} +\d", table, re.M), table


def test_a_ten_class_table_keeps_long_names_whole_and_its_columns_aligned():
    classes = [f"{kind} with a name longer than any column" for kind in
               ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot")]
    matrix = np.random.default_rng(0).integers(0, 1200, (10, 10))
    lines = format_confusion(matrix, classes).splitlines()
    assert lines[0].split()[-10:] == [str(i) for i in range(10)]
    for index, (name, line) in enumerate(zip(classes, lines[1:])):
        assert line.startswith(f"{index} {name} ")
        assert [int(n) for n in line[len(f'{index} {name}'):].split()] == matrix[index].tolist()
    assert len({len(line) for line in lines}) == 1          # one width: the columns line up


def test_model_names_without_tensorflow_are_the_models_built():
    from trainer.model import backbones, models
    from trainer.model.names import MODEL_NAMES

    assert MODEL_NAMES == sorted([*models.MODELS, *backbones.BACKBONES])


def test_the_nightly_refuses_a_bad_trainer_flag_before_tensorflow(tmp_path):
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({
        "name": "m", "root": "s3://bucket", "evaluation": {"dataset": "s3://bucket/eval"},
        "ingest": {"source": "s3://raw/x", "labels_file": "s3://raw/l.csv", "classes": "a,b"},
        "train": {"args": ["--model", "resnet5O"]}}))
    result, seconds = python(main_of("infra.nightly.__main__", ["--config", str(config)]))
    assert result.returncode == 2 and result.stdout.split() == ["False", "False"], result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line == (f"nightly: error: {config}: train: unknown model 'resnet5O' (choose from: cnn, cnn4, cnn5, "
                    "efficientnet_b0, linear, mobilenet_v2, resnet20, resnet50, shallow_cnn, vgg16)"), line
    assert seconds < 5, seconds
