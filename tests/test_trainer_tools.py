"""What the trainer tells the user, under a real horovodrun -np 2: the input check, --profile
(tf.profiler trace + Horovod timeline), TensorBoard logs and PNG plots, all on the real S3 server."""
import json
import re

from pipeline.dataset.manifest import read_manifest
from tests.conftest import run_cli

CHECK = re.compile(r"input check \(per process\): (input-bound|compute-bound): the input delivers "
                   r"(\d+) images/s")


def horovod(dataset, checkpoints, cache, *extra):
    return ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-m", "trainer",
            "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", "1",
            "--batch-size", "4", "--cache-dir", str(cache), *extra]


def test_check_input_only_measures_and_exits(dataset, storage, tmp_path):
    result = run_cli(horovod(dataset, "s3://fmnist/runs/check-only", tmp_path, "--check-input", "only"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert CHECK.search(result.stdout), result.stdout[-2000:]
    assert "epoch 1/1" not in result.stdout
    assert not list(storage.list("s3://fmnist/runs/check-only"))         # nothing trained or written


def test_profile_tensorboard_plots_and_input_check_in_the_report(dataset, storage, tmp_path):
    run = "s3://fmnist/runs/profiled"
    result = run_cli(horovod(dataset, run, tmp_path, "--profile", "--check-input", "before"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = [url for url, _ in storage.list(run)]
    assert any(re.search(r"/profile/plugins/profile/.*\.xplane\.pb$", u) for u in files), files
    timeline = json.loads(storage.read_text(f"{run}/profile/horovod_timeline.json"))
    assert any("ALLREDUCE" in str(event.get("name", "")) for event in timeline)
    assert any("/tensorboard/train/events.out.tfevents" in u for u in files), files
    report = json.loads(storage.read_text(f"{run}/report.json"))
    assert report["input_check"]["input_bound"] in (True, False)
    assert report["input_check"]["input_images_per_second"] > 0
    for name in ("confusion_matrix", "training_curves"):
        assert storage.read_bytes(report["plots"][name])[:4] == b"\x89PNG"
    train_split = read_manifest(storage, dataset).splits["train"]    # standardised with its stats
    assert report["standardization"] == {"mean": train_split.pixel_mean,
                                         "std": [max(s, 1e-3) for s in train_split.pixel_std]}
