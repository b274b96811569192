"""A first run with the default flags trains well (issue 14's targets): real images uploaded to
the real S3 server, ingested by the real Beam job, then `horovodrun -np 2 python -m trainer
--epochs 3` with no other training flag. Fashion-MNIST: 5,000 training images, scored on 5,000
test images. MNIST: 6,000 digits as JPEGs in the folders layout (a new dataset as an engineer
brings it), split by the job 80/10/10, scored on its ~600 test images."""
import json

import pytest

from infra.local import fashion_mnist, mnist, photos
from pipeline.dataset.storage import join
from tests.conftest import ingest, ingest_folders, run_cli

IMAGES = 5000
# Measured here with the defaults (auto: 105 updates, so no crops): 0.862; 0.800 with crops.
BAR = 0.84
DIGITS = 6000
MNIST_BAR = 0.97     # the target; measured here twice: 0.9756 (560 of 574), the same both runs


@pytest.fixture(scope="module")
def fmnist_5k(storage):
    raw = fashion_mnist.upload(storage, "s3://fmnist-5k/raw", limit=IMAGES, log=lambda *_: None)
    return ingest(raw, "s3://fmnist-5k/datasets/default", "train:0.9,validation:0.1")


@pytest.fixture(scope="module")
def mnist_6k(storage):
    photos.write(storage, "s3://mnist-6k/raw", mnist.digits(DIGITS))
    return ingest_folders("s3://mnist-6k/raw", "s3://mnist-6k/datasets/default",
                          "train:0.8,validation:0.1,test:0.1")


def train_with_defaults(dataset, checkpoints, storage, cache_dir):
    """horovodrun -np 2 python -m trainer with only --epochs 3 chosen; (its output, report.json)."""
    result = run_cli(["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-m", "trainer",
                      "--dataset", dataset, "--checkpoint-dir", checkpoints, "--epochs", "3",
                      "--cache-dir", str(cache_dir)], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads(storage.read_text(join(checkpoints, "report.json")))


@pytest.mark.slow        # minutes of end-to-end training: `make test-all` runs it (README)
def test_fashion_mnist_with_default_flags_reaches_the_target_in_3_epochs(fmnist_5k, storage, tmp_path):
    result, report = train_with_defaults(fmnist_5k, "s3://fmnist-5k/runs/defaults", storage, tmp_path)
    accuracy = report["test"]["accuracy"]
    print(f"Fashion-MNIST {report['test']['examples']} test images after 3 epochs: {accuracy:.4f}")
    assert report["test"]["examples"] == IMAGES
    assert "augmentation off (--augment auto: 105 updates, fewer than 1000)" in result.stdout
    assert accuracy >= BAR, result.stdout[-2000:]


@pytest.mark.slow        # minutes of end-to-end training: `make test-all` runs it (README)
def test_mnist_digits_with_default_flags_reach_the_target_in_3_epochs(mnist_6k, storage, tmp_path):
    result, report = train_with_defaults(mnist_6k, "s3://mnist-6k/runs/defaults", storage, tmp_path)
    accuracy, examples = report["test"]["accuracy"], report["test"]["examples"]
    print(f"MNIST {examples} test images after 3 epochs: {accuracy:.4f}")
    assert 450 <= examples <= 750                       # ~10 % of 6,000 by the job's hash split
    assert accuracy >= MNIST_BAR, result.stdout[-2000:]
