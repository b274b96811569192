"""The trainer's command line as an ML engineer meets it: every flag explained with its default,
a diverging run stopped with its own exit code and nothing exported, record-level sharding
announced. Real S3 server, the session's dataset published by the real Beam job."""
import argparse
import re
import sys

import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import join
from tests.conftest import run_cli
from trainer.errors import DIVERGED
from trainer.flags import parser
from trainer.train import record_sharding


def test_every_flag_has_help_that_shows_its_default():
    unexplained, no_default = [], []
    for action in parser()._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.help:
            unexplained.append(action.option_strings)
        elif action.default not in (None, False) and "default" not in action.help:
            no_default.append(action.option_strings)
    assert not unexplained and not no_default, (unexplained, no_default)
    shown = run_cli(["trainer", "--help"])
    text = " ".join(shown.stdout.split())                  # argparse wraps the lines
    assert shown.returncode == 0 and "--divergence-factor" in text and "default 0.025)" in text, text


def trainer(dataset, checkpoints, cache, *extra):
    return ["trainer", "--dataset", dataset, "--checkpoint-dir", checkpoints, "--cache-dir", str(cache),
            "--batch-size", "16", "--no-tensorboard", *extra]


def test_a_learning_rate_of_50_stops_as_diverged_and_exports_nothing(dataset, storage, tmp_path):
    checkpoints = "s3://fmnist/runs/lr-50"
    result = run_cli(trainer(dataset, checkpoints, tmp_path, "--lr", "50", "--epochs", "3"))
    assert result.returncode == DIVERGED, result.stdout[-2000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("trainer: error:")]
    assert len(errors) == 1 and re.search(r"loss became (nan|inf|-inf) ", errors[0]), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not storage.exists(join(checkpoints, "model", "saved_model.pb"))
    assert not storage.exists(join(checkpoints, "report.json"))


def test_a_loss_that_grows_past_the_bound_is_a_divergence(dataset, storage, tmp_path):
    """A bound of 0.5x the first epoch's loss: the second epoch's loss, lower but not half as
    low, counts as grown past it; the run stops after epoch 2 with the line that names the bound."""
    checkpoints = "s3://fmnist/runs/grows"
    result = run_cli(trainer(dataset, checkpoints, tmp_path, "--epochs", "3", "--divergence-factor", "0.5",
                             "--lr", "0.001"))
    assert result.returncode == DIVERGED, result.stdout[-2000:] + result.stderr[-3000:]
    assert "at the end of epoch 2 is more than 0.5x the first epoch's" in result.stderr, result.stderr[-2000:]
    assert not storage.exists(join(checkpoints, "model", "saved_model.pb"))


def test_record_level_sharding_is_announced_with_the_counts(dataset, storage):
    manifest = read_manifest(storage, dataset)
    files = len(manifest.splits["train"].shards)
    assert record_sharding(manifest, 1) == []
    lines = record_sharding(manifest, files + 1)
    train = f"train: {files} shard file(s) for {files + 1} processes: each process reads all of them"
    [line] = [line for line in lines if line.startswith(train)]
    assert line.endswith(f"keeps one record in {files + 1} ({manifest.splits['train'].num_records} records)")


def test_an_error_only_rank_0_finds_is_one_line_with_no_traceback_from_the_other_rank(dataset, tmp_path):
    """Rank 0 alone lists the checkpoints: a bucket that does not exist is its error alone, and
    rank 1 (waiting for the outcome) stops quietly instead of tracing in a dead collective."""
    result = run_cli(["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m",
                      *trainer(dataset, "s3://no-such-bucket/run", tmp_path, "--epochs", "1")])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    errors = [line for line in output.splitlines() if "trainer: error:" in line]
    assert len(errors) == 1 and "no-such-bucket" in errors[0], output[-3000:]
    from_ranks = [line for line in output.splitlines() if re.match(r"\[\d+\]<std(err|out)>:", line)]
    assert from_ranks and not [line for line in from_ranks if "Traceback" in line or "shut down" in line], \
        output[-3000:]           # (horovodrun itself then raises "processes exited with non-zero status")


def test_an_error_every_rank_finds_is_printed_once(dataset, tmp_path):
    result = run_cli(["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m",
                      *trainer(dataset, "s3://fmnist/runs/bad-flags", tmp_path, "--epochs", "2",
                               "--decay-epochs", "5", "--decay", "step")])
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "trainer: error:" in line]
    assert result.returncode != 0 and len(errors) == 1, output[-3000:]
    assert "must lie before --epochs 2" in errors[0], errors


def test_a_divergence_every_rank_decides_is_printed_once(dataset, storage, tmp_path):
    """Epoch-end losses are averaged over ranks, so both ranks stop on the bound together; the
    diagnosis is rank 0's one line, and the exit code still says "diverged"."""
    checkpoints = "s3://fmnist/runs/grows-two-ranks"
    result = run_cli(["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m",
                      *trainer(dataset, checkpoints, tmp_path, "--epochs", "3", "--divergence-factor", "0.5",
                               "--lr", "0.001")])
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "trainer: error:" in line]
    assert result.returncode != 0 and len(errors) == 1, output[-3000:]
    assert "is more than 0.5x the first epoch's" in errors[0] and errors[0].startswith("[0]"), errors
    assert f"Exit code: {DIVERGED}" in output, output[-2000:]       # horovodrun names the rank's code
    assert not storage.exists(join(checkpoints, "model", "saved_model.pb"))
