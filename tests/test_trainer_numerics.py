"""Precision, XLA, gradient compression and accumulation under a real horovodrun -np 2 (Gloo)
on the Beam-published test dataset. No GPU exists here: float16 and bfloat16 run on the CPU
(slowly, for real), XLA auto-clusters on the CPU; what only a GPU can show (speed, NCCL) is in
the README's GPU section and benchmarks/gpu_check.py."""
import json
import re
import sys
import threading

import pytest

from tests.conftest import run_cli
from tests.helpers import kill_rank_when


def horovod(dataset, checkpoints, cache, *flags, epochs=2):
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-u", "-m",
            "trainer", "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", str(epochs),
            "--batch-size", "8", "--lr", "0.02", "--warmup-epochs", "0", "--cache-dir", str(cache),
            "--no-tensorboard", "--log-every", "1", *flags]


def digests(output: str) -> dict:
    return dict(re.findall(r"rank (\d) weights sha256 ([0-9a-f]+)", output))


def trained(result, storage, checkpoints) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = digests(result.stdout)
    assert set(ranks) == {"0", "1"} and ranks["0"] == ranks["1"], result.stdout[-2000:]   # one model
    return json.loads(storage.read_text(f"{checkpoints}/report.json"))


@pytest.mark.parametrize("precision", [pytest.param("mixed_float16", marks=pytest.mark.slow), "mixed_bfloat16"])
def test_mixed_precision_trains_two_ranks_alike(precision, dataset, storage, tmp_path):
    checkpoints = f"s3://fmnist/runs/precision-{precision}"
    result = run_cli(horovod(dataset, checkpoints, tmp_path, "--precision", precision, epochs=3))
    report = trained(result, storage, checkpoints)
    losses = [h["loss"] for h in report["history"]]
    assert losses[-1] < losses[0], losses
    assert report["settings"]["precision"] == precision
    assert (report["loss_scale"] is not None) == (precision == "mixed_float16")   # bf16: no scaling
    assert f"CPU, {precision}" in result.stdout


def test_a_float16_overflow_is_skipped_on_both_ranks_and_the_scale_survives_a_kill(dataset, storage, tmp_path,
                                                                                  monkeypatch):
    """Rank 1's gradients are made infinite at step 3 (trainer/runtime/faults.py); the allreduce spreads
    them, so both ranks skip that update and halve the loss scale, and the NaN guard stays quiet.
    Then a run is killed after a mid-epoch checkpoint and its relaunch restores that scale."""
    fault = {"TRAINER_FAULT_INF_GRADIENT": "1:3"}
    flags = ["--precision", "mixed_float16", "--model", "linear", "--checkpoint-every", "5"]
    checkpoints = "s3://fmnist/runs/float16-skip"
    result = run_cli(horovod(dataset, checkpoints, tmp_path, *flags), env=fault)
    trained(result, storage, checkpoints)                    # same weights: both skipped alike
    assert "fault injection: rank 1 step 3" in result.stdout, result.stdout[-3000:]
    skipped = dict((step, (int(a), int(b))) for step, a, b in re.findall(
        r"step (\d+) skipped: non-finite float16 gradients; loss scale (\d+) -> (\d+)", result.stdout))
    assert "4" in skipped and skipped["4"][1] == skipped["4"][0] // 2, result.stdout[-3000:]
    assert "loss became" not in result.stdout + result.stderr

    checkpoints = "s3://fmnist/runs/float16-resume"
    monkeypatch.setenv("TRAINER_FAULT_INF_GRADIENT", "1:3")      # the killed run has the fault too
    code, output = kill_rank_when(horovod(dataset, checkpoints, tmp_path, *flags, epochs=3), checkpoints,
                                  lambda lines: any("ckpt-00000010 committed" in line for line in lines))
    assert code != 0
    monkeypatch.delenv("TRAINER_FAULT_INF_GRADIENT")
    # Every checkpoint kept, so the marker of the one resumed from is still there to compare with.
    again = run_cli(horovod(dataset, checkpoints, tmp_path, *flags, "--keep-checkpoints", "100", epochs=3))
    trained(again, storage, checkpoints)
    restored = re.search(r"loss scale (\d+) restored", again.stdout)
    latest = re.search(r"resumed from (\S+): epoch", again.stdout)
    assert restored and latest, again.stdout[-3000:]
    marker = json.loads(storage.read_text(f"{latest.group(1)}/COMMITTED"))
    assert float(restored.group(1)) == marker["loss_scale"] < 32768      # lowered by the skip


@pytest.mark.parametrize("flag", [pytest.param("--xla", marks=pytest.mark.slow),
                                  pytest.param("--fp16-allreduce", marks=pytest.mark.slow)])
def test_xla_and_fp16_allreduce_train_two_ranks_alike(flag, dataset, storage, tmp_path):
    checkpoints = f"s3://fmnist/runs/flag{flag}"
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"} if flag == "--xla" else {}
    result = run_cli(horovod(dataset, checkpoints, tmp_path, flag), env=env)
    report = trained(result, storage, checkpoints)
    assert report["settings"][flag[2:].replace("-", "_")] is True
    if flag == "--xla":      # TensorFlow's own line when a cluster was compiled by XLA
        assert "Compiled cluster using XLA" in result.stderr + result.stdout


def test_accumulating_two_batches_equals_one_batch_twice_as_large(dataset, storage, tmp_path):
    """No batch norm, no dropout (--model linear): the updates alone decide the result. The
    learning rate is per --batch-size images, so the run of batches of 8 asks for half of it."""
    runs = {}
    for name, flags in {"accumulate": ["--batch-size", "8", "--accumulate", "2", "--lr", "0.01"],
                        "double": ["--batch-size", "16", "--lr", "0.02"]}.items():
        checkpoints = f"s3://fmnist/runs/accumulate-{name}"
        runs[name] = trained(run_cli(horovod(dataset, checkpoints, tmp_path, "--model", "linear", *flags)),
                             storage, checkpoints)
    a, b = runs["accumulate"], runs["double"]
    assert a["steps_per_epoch"] == 2 * b["steps_per_epoch"]              # batches per rank
    assert a["updates_per_epoch"] == b["updates_per_epoch"] == a["steps_per_epoch"] // 2
    assert a["global_batch"] == b["global_batch"] == 32
    for x, y in zip(a["history"], b["history"]):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
    assert a["test"]["confusion_matrix"] == b["test"]["confusion_matrix"]


def test_two_jobs_on_one_host_keep_their_local_files_apart(dataset, storage, tmp_path):
    """Same host, same --cache-dir, at once: each commits its checkpoints and resumes from them."""
    results = {}

    def run(name):
        results[name] = run_cli(horovod(dataset, f"s3://fmnist/runs/together-{name}", tmp_path / "cache",
                                        "--model", "linear", "--checkpoint-every", "4", epochs=1))
    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        trained(results[name], storage, f"s3://fmnist/runs/together-{name}")
        again = run_cli(horovod(dataset, f"s3://fmnist/runs/together-{name}", tmp_path / "cache",
                                "--model", "linear", "--checkpoint-every", "4", epochs=2))
        trained(again, storage, f"s3://fmnist/runs/together-{name}")
        assert f"together-{name}/ckpt-" in again.stdout and "resumed from" in again.stdout
    jobs = sorted(p.name for p in (tmp_path / "cache" / "jobs").iterdir())
    assert len(jobs) == 2 and all((tmp_path / "cache" / "jobs" / j / "rank-1").is_dir() for j in jobs)
