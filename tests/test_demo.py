"""The demo's short form as a new user runs it (issue 29): every step shows its progress on the
demo's standard output (the upload, the ingestion with its total, percentage and time left, the
training), the ingestion's summary names the version it published, and no TensorFlow, absl,
horovodrun or mpirun banner reaches the terminal; the logs keep the steps' whole output. The
real demo: its own S3 server, the Beam job, horovodrun -np 2."""
import re
import subprocess
import sys

from tests.conftest import ROOT

BANNER = re.compile(r"absl::InitializeLog|oneDNN|port\.cc:|^[IW]\d{4} |Process \d+ exit with status|"
                    r"Primary job|^Traceback", re.M)


def test_the_short_demo_shows_each_steps_progress_and_no_banner(tmp_path):
    workdir = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "infra.demo", "--limit", "200", "--epochs", "1",
                             "--s3-data-dir", "", "--workdir", str(workdir)],
                            cwd=ROOT, text=True, capture_output=True, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    uploaded = re.findall(r"^upload: ([\d,]+)/400 images \((\d+) %\), [\d,]+ images/s", out, re.M)
    assert uploaded and uploaded[-1] == ("400", "100"), out[:3000]
    ingested = re.findall(r"^ingest: ([\d,]+)/(\d+) images read \((\d+) %\), [\d,]+ images/s", out, re.M)
    assert ingested and ingested[-1] == ("400", "400", "100"), out[:5000]     # the total known
    [summary] = re.findall(r"^published fashion_mnist (v-[0-9a-f]+) at s3://demo/datasets/fashion_mnist: .*$",
                           out, re.M)
    assert "epoch 1/1 done in" in out and "demo done in" in out, out[-3000:]
    assert not BANNER.search(out + result.stderr), out[-5000:] + result.stderr[-2000:]
    ingest_log = (workdir / "ingest.log").read_text()
    assert all(f"ingest: {done}/{total} images read ({percent} %)" in ingest_log for done, total, percent in ingested)
    assert "absl::InitializeLog" in (workdir / "train.log").read_text()     # horovodrun's own, kept there
