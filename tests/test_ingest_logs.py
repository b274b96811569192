"""What a data engineer sees on the terminal while the ingestion job runs (issues 16, 29): a start
line, a progress line every --progress_seconds (images read of the total, the current rate, the
percentage and the time left) and a last one when the workers are done, one summary line naming
the version published and the log file; Beam's and the workers' lines go to that file. A
worker's failure is one line naming the step; its traceback is in the log. Real Beam job
(DirectRunner, 2 worker processes), real S3 servers."""
import os
import re
import subprocess
import sys

from infra.local.s3server import LocalS3
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import S3Settings, Storage
from tests.conftest import ROOT, run_cli
from tests.helpers import png

PROGRESS = re.compile(r"^ingest: ([\d,]+)/([\d,]+) images read \((\d+) %\), ([\d,]+) images/s"
                      r"(, [\w ]+ left)?; ([\d,]+) quarantined, ([\d,]+) shards written, \d+ s$")
STARTING = re.compile(r"^ingest: 0(/300)? images read( \(0 %\))?, 0 images/s; (workers starting|rows counted).*, \d+ s$")


def ingest(raw, output, log_file, *flags):
    return run_cli(["pipeline", "--source", raw["images"], "--labels_file", raw["labels"],
                    "--classes", raw["classes"], "--output", output, "--num_readers", "2",
                    "--log_file", str(log_file), *flags])


def test_a_successful_ingest_prints_a_start_line_progress_and_a_summary(fmnist, tmp_path):
    log_file = tmp_path / "ingest.log"
    result = ingest(fmnist, "s3://fmnist/datasets/logs", log_file, "--progress_seconds", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines() + result.stdout.splitlines()
    assert lines[0].startswith(f"ingesting {fmnist['images']} -> s3://fmnist/datasets/logs; log: {log_file}")
    summary = result.stdout.strip().splitlines()
    version = read_manifest(Storage(), "s3://fmnist/datasets/logs").version
    assert len(summary) == 1 and summary[0].startswith(f"published logs {version} at s3://fmnist/datasets/logs:")
    assert summary[0].endswith(f"; log: {log_file}")
    between = result.stderr.splitlines()[1:]                # one "published" line: the summary's
    progress = [PROGRESS.match(line) for line in between if not STARTING.match(line)]
    assert progress and all(progress), result.stderr        # nothing but progress lines between
    read = [int(m[1].replace(",", "")) for m in progress]
    assert read == sorted(read) and {int(m[2]) for m in progress} == {300}     # of the 300 images
    assert (read[-1], progress[-1][3]) == (300, "100")      # the last line: where the workers ended
    text = log_file.read_text()
    assert "apache_beam" in text and "Traceback" not in text     # Beam's own lines went there


def test_the_default_log_of_a_successful_ingest_is_at_most_15_lines(fmnist, tmp_path):
    result = ingest(fmnist, "s3://fmnist/datasets/logs-default", tmp_path / "ingest.log")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stderr + result.stdout).strip().splitlines()
    assert 2 <= len(lines) <= 15, lines
    assert not [line for line in lines if "Discarding unparseable" in line or "Found credentials" in line]


def test_verbose_shows_beams_own_lines(fmnist, tmp_path):
    log_file = tmp_path / "ingest.log"
    result = ingest(fmnist, "s3://fmnist/datasets/logs-verbose", log_file, "-v")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stderr.splitlines()) > 15, result.stderr      # Beam's INFO lines as well


def test_a_worker_failure_is_one_line_naming_the_step_and_the_traceback_is_in_the_log(tmp_path):
    """The S3 server the images sit in is stopped just after the launcher's checks (the start
    line): the workers cannot read it, so the job fails inside a worker step."""
    log_file = tmp_path / "ingest.log"
    with LocalS3(log_path=str(tmp_path / "s3.log")) as server:
        storage = Storage(settings=S3Settings(endpoint_url=server.endpoint_url,
                                              access_key_id=server.credentials["AWS_ACCESS_KEY_ID"],
                                              secret_access_key=server.credentials["AWS_SECRET_ACCESS_KEY"]))
        storage.ensure_bucket("s3://gone")
        for i in range(20):
            storage.write_bytes(f"s3://gone/raw/{'ab'[i % 2]}/{i}.png", png(8, 8, seed=i))
        job = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--source", "s3://gone/raw", "--output", "s3://gone/ds",
             "--num_readers", "1", "--log_file", str(log_file)],
            cwd=ROOT, env={**os.environ, **server.env()}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = job.stderr.readline()
        assert first.startswith("ingesting s3://gone/raw"), first
        server.stop()                                   # before any worker has read an image
        _, rest = job.communicate(timeout=600)
    lines = [line for line in rest.splitlines() if line.strip()]
    assert job.returncode == 1, rest
    assert len(lines) == 1 and re.match(r"pipeline: failed in [A-Za-z]+/\S+: ", lines[0]), lines
    assert lines[0].endswith(f"(details: {log_file})")
    assert "Traceback" in log_file.read_text()
