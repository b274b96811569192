"""The ingestion job as a data engineer meets it (issue 16): every bad invocation is one line on
stderr naming the flag or URL, found before any image is read; a dataset nobody can train on is
refused; one the trainer would stumble on is published with a warning that names the fix."""
import json
import os
import subprocess
import sys
import zlib

import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage
from tests.conftest import ROOT, run_cli
from tests.helpers import png
from tests.test_cli_errors import one_clear_line
from tests.test_urls import checked, ingest_from  # noqa: F401  (the credential-checking server)


def folders(root, counts: dict[str, int], channels: int = 1):
    """<root>/<class>/<n>.png: `counts` images per class, 8x8."""
    for name, count in counts.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(count):
            (root / name / f"{i}.png").write_bytes(png(8, 8, channels, seed=zlib.crc32(f"{name}/{i}".encode())))
    return str(root)


def ingest(source, output, *flags, env=None):
    return run_cli(["pipeline", "--source", str(source), "--output", str(output),
                    "--num_readers", "1", "--splits", "train:1", *flags], env=env)


def test_a_wrong_secret_names_the_credentials(checked):  # noqa: F811
    key = checked.credentials["AWS_ACCESS_KEY_ID"]
    result = ingest_from(checked, "--s3_access_key_id", key, "--s3_secret_access_key", "wrong")
    assert result.returncode == 2
    one_clear_line(result, "s3://checked/raw", "refused these credentials", "--s3_secret_access_key")


def test_no_credentials_at_a_reachable_endpoint_says_credentials_not_unreachable(checked):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL_S3=checked.endpoint_url, AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    result = subprocess.run([sys.executable, "-m", "pipeline", "--source", "s3://checked/raw",
                             "--output", "s3://checked/ds"], env=env, cwd=ROOT, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 2
    last = one_clear_line(result, "no S3 credentials found", "--s3_access_key_id")
    assert "cannot reach" not in last


def test_an_output_whose_parent_is_a_file(tmp_path):
    source = folders(tmp_path / "images", {"a": 2, "b": 2})
    (tmp_path / "file").write_text("not a folder")
    result = ingest(source, tmp_path / "file" / "dataset")
    assert result.returncode == 2
    one_clear_line(result, "--output", str(tmp_path / "file" / "dataset"), "cannot write there")


def test_an_unwritable_output_is_found_before_reading(tmp_path):
    source = folders(tmp_path / "images", {"a": 2, "b": 2})
    result = ingest(source, "/sys/pipeline-test-output")     # sysfs: refused even to root
    assert result.returncode == 2
    one_clear_line(result, "--output /sys/pipeline-test-output", "cannot write there")
    assert len(result.stderr.strip().splitlines()) == 1      # no worker ever started


def test_a_binary_labels_file_is_named(tmp_path):
    source = folders(tmp_path / "images", {"a": 2})
    junk = tmp_path / "labels.csv"
    junk.write_bytes(bytes(range(256)) * 40)
    result = ingest(source, tmp_path / "out", "--labels_file", str(junk))
    assert result.returncode == 2
    one_clear_line(result, f"labels file {junk}", "not UTF-8")


def test_classes_that_match_no_image_publish_nothing(tmp_path):
    source = folders(tmp_path / "images", {"a": 3, "b": 3})
    output = tmp_path / "out"
    result = ingest(source, output, "--classes", "cat,dog")
    assert result.returncode == 1
    last = one_clear_line(result, "nothing published", "no records")
    assert not (output / "manifest.json").exists()
    kept = [p for p in os.listdir(output) if p.startswith("refused-")]
    assert len(kept) == 1 and f"{kept[0]}/" in last
    entries = [json.loads(line) for name in os.listdir(output / kept[0])
               for line in (output / kept[0] / name).read_text().splitlines()]
    assert len(entries) == 6 and all("unknown label" in e["reason"] for e in entries)


def test_a_class_without_images_is_warned_and_recorded_or_refused_when_strict(tmp_path):
    source = folders(tmp_path / "images", {"a": 3, "b": 3})
    result = ingest(source, tmp_path / "out", "--classes", "a,b,c")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 class(es) have no records: c" in result.stderr
    assert read_manifest(Storage(), str(tmp_path / "out")).empty_classes == ["c"]
    strict = ingest(source, tmp_path / "strict", "--classes", "a,b,c", "--strict_classes")
    assert strict.returncode == 1
    one_clear_line(strict, "--strict_classes", "no records for c")
    assert not (tmp_path / "strict" / "manifest.json").exists()


def test_images_that_disagree_in_channels_get_one_warning_with_counts(tmp_path):
    source = folders(tmp_path / "images", {"a": 4, "b": 3})
    (tmp_path / "images" / "b" / "rgba.png").write_bytes(png(8, 8, 4))
    (tmp_path / "images" / "b" / "tiny.png").write_bytes(png(1, 1, 1))
    result = ingest(source, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    warning = [line for line in result.stderr.splitlines() if "disagree in channels" in line]
    assert len(warning) == 1
    assert "8 with 1 channel(s), 1 with 4 channel(s)" in warning[0] and "--channels" in warning[0]
    assert any("differ in size (height 1-8, median 8; width 1-8, median 8)" in line and "--image-size" in line
               for line in result.stderr.splitlines())


@pytest.mark.parametrize("channels, expected", [("1", 1), ("3", 3)])
def test_channels_flag_makes_the_mixed_set_trainable(tmp_path, channels, expected):
    source = folders(tmp_path / "images", {"a": 2, "b": 2})
    (tmp_path / "images" / "b" / "rgba.png").write_bytes(png(8, 8, 4))
    result = ingest(source, tmp_path / "out", "--channels", channels)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "disagree in channels" not in result.stderr
    manifest = read_manifest(Storage(), str(tmp_path / "out"))
    assert manifest.image_shape == [8, 8, expected] and manifest.splits["train"].pixel_mean
