"""Faults caused for real under horovodrun -np 2 (Gloo): a loss that becomes NaN, and kill -9 of
ONE rank mid-epoch. Neither may hang; the killed run resumes from a mid-epoch checkpoint and ends
with exactly the weights of an uninterrupted run of the same seed."""
import json
import os
import re
import tempfile
import time

import tensorflow as tf

from pipeline.dataset import records
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import join
from tests.conftest import run_cli
from tests.helpers import kill_rank_when, rank_pid


def horovod(dataset, checkpoints, cache, epochs, *extra):
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-u", "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", str(epochs),
            "--batch-size", "8", "--lr", "0.02", "--warmup-epochs", "0.5", "--cache-dir", str(cache),
            "--no-tensorboard", *extra]


def train_ids(storage, dataset) -> set[str]:
    ids = set()
    with tempfile.TemporaryDirectory() as where:
        for shard in read_manifest(storage, dataset).splits["train"].shards:
            local = os.path.join(where, shard.file)
            storage.download(join(dataset, shard.file), local)
            ids |= {records.decode_example(r.numpy()).id for r in tf.data.TFRecordDataset(local)}
    return ids


def test_nan_loss_stops_at_once_with_a_diagnosis_naming_the_records(dataset, storage, tmp_path):
    started = time.monotonic()
    result = run_cli(horovod(dataset, str(tmp_path / "run"), tmp_path, 20, "--lr", "1e12",
                             "--warmup-epochs", "0"), timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    diagnosis = re.search(r"trainer: error: loss became nan on rank \d at epoch 1 step (\d+) .*"
                          r"learning rate ([0-9.e+]+); last finite loss .*; this rank's batch held "
                          r"records (.+?)\. Lower --lr", output)
    assert diagnosis, output[-3000:]
    named = diagnosis.group(3).split(", ")
    assert len(named) == 8 and len(set(named)) == 8          # --batch-size 8
    assert set(named) <= train_ids(storage, dataset), named
    assert "epoch 2/20" not in result.stdout and "Traceback" not in result.stdout
    committed = [p for p in os.listdir(tmp_path / "run") if p.startswith("ckpt-")] \
        if os.path.exists(tmp_path / "run") else []
    assert not committed                                      # nothing NaN was committed
    assert time.monotonic() - started < 240


def committed_mid_epoch(storage, checkpoints) -> bool:
    for url, _ in storage.list(checkpoints):
        if url.endswith("/COMMITTED") and json.loads(storage.read_text(url)).get("batch", 0) > 0:
            return True
    return False


def weights_digest(output: str, rank: int) -> str:
    return re.search(rf"rank {rank} weights sha256 ([0-9a-f]+)", output).group(1)


def test_kill_one_rank_ends_the_job_and_the_relaunch_resumes_exactly(dataset, storage, tmp_path):
    checkpoints, epochs = "s3://fmnist/runs/one-rank-killed", 3
    # 120 training records / (8 x 2) = 7 steps per epoch; a checkpoint every 3 steps.
    command = horovod(dataset, checkpoints, tmp_path / "a", epochs, "--log-every", "0.05",
                      "--checkpoint-every", "3")
    # The survivor must not hang on its allreduce: kill_rank_when waits 120 s at most.
    returncode, output = kill_rank_when(command, checkpoints, lambda _: committed_mid_epoch(storage, checkpoints))
    assert returncode != 0
    assert "Terminating remaining workers after failure of Process 1" in output, output[-3000:]
    assert rank_pid(checkpoints, 0) is None

    resumed = run_cli(horovod(dataset, checkpoints, tmp_path / "a", epochs, "--checkpoint-every", "3"),
                      timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    where = re.search(rf"resumed from {checkpoints}/ckpt-\d+: epoch (\d), (\d) of 7 batches done",
                      resumed.stdout)
    assert where, resumed.stdout[-3000:]
    print("resumed at epoch", where.group(1), "batch", where.group(2))

    whole = run_cli(horovod(dataset, "s3://fmnist/runs/not-killed", tmp_path / "b", epochs,
                            "--checkpoint-every", "3"), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    # Same seed: the resumed run reads the same batches in the same order, draws the same
    # augmentation and dropout, so it ends with bit-identical weights and the same test result.
    assert weights_digest(resumed.stdout, 0) == weights_digest(whole.stdout, 0)
    assert weights_digest(resumed.stdout, 1) == weights_digest(resumed.stdout, 0)
    a = json.loads(storage.read_text(f"{checkpoints}/report.json"))
    b = json.loads(storage.read_text("s3://fmnist/runs/not-killed/report.json"))
    assert a["test"]["confusion_matrix"] == b["test"]["confusion_matrix"]
