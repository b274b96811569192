"""Bad invocations exit non-zero with one clear line naming the problem, not a traceback."""
import pytest

from tests.conftest import run_cli

UNREACHABLE = "http://127.0.0.1:9"   # discard port: nothing listens there


def one_clear_line(result, *words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, last
    return last


@pytest.mark.parametrize("args, words", [
    (["--output", "/tmp/x"], ["--source is required"]),
    (["--source", "/tmp", "--output", "/tmp/x", "--colour", "red"], ["unknown flag --colour"]),
    (["--source", "/nonexistent/images", "--output", "/tmp/x"], ["/nonexistent/images", "no objects"]),
    (["--source", "/tmp", "--output", "/tmp/x", "--splits", "train:2"], ["sum to 2"]),
])
def test_pipeline_usage_errors(args, words):
    one_clear_line(run_cli(["pipeline", *args]), *words)


def test_pipeline_unreachable_endpoint_is_named(s3):
    result = run_cli(["pipeline", "--source", "s3://fmnist/raw/images", "--output", "s3://fmnist/x",
                      "--s3_endpoint_url", UNREACHABLE])
    one_clear_line(result, "cannot reach S3", UNREACHABLE)


def test_pipeline_help_explains_the_flags():
    result = run_cli(["pipeline", "--help"])
    assert result.returncode == 0
    for flag in ("--source", "--labels_file", "--classes", "--output", "--num_readers", "--overwrite"):
        assert flag in result.stdout


def test_trainer_without_a_published_dataset(s3, storage):
    storage.ensure_bucket("s3://fmnist/x")
    storage.write_bytes("s3://fmnist/half/shard-00000", b"orphan shard, no manifest")
    result = run_cli(["trainer", "--dataset", "s3://fmnist/half", "--checkpoint-dir", "s3://fmnist/c"])
    one_clear_line(result, "no published dataset at s3://fmnist/half", "manifest.json is missing")


def test_trainer_missing_dataset_dir(tmp_path):
    result = run_cli(["trainer", "--dataset", str(tmp_path / "nothing"), "--checkpoint-dir", str(tmp_path)])
    one_clear_line(result, "no published dataset", str(tmp_path / "nothing"))


def test_trainer_unreachable_endpoint(s3):
    result = run_cli(["trainer", "--dataset", "s3://fmnist/datasets/clean", "--checkpoint-dir",
                      "s3://fmnist/c", "--s3-endpoint-url", UNREACHABLE])
    one_clear_line(result, "cannot reach S3", UNREACHABLE)


def test_trainer_unknown_flag():
    result = run_cli(["trainer", "--dataset", "x", "--checkpoint-dir", "y", "--epochz", "3"])
    one_clear_line(result, "unrecognized arguments: --epochz")


def test_trainer_unknown_model(dataset):
    result = run_cli(["trainer", "--dataset", dataset, "--checkpoint-dir", "s3://fmnist/c", "--model", "vgg99"])
    one_clear_line(result, "unknown model 'vgg99'", "cnn")
