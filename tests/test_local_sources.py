"""A local --source holds only what a listing may read (issue 26, item 5): a FIFO (it hung the job
forever), a symlink to /dev/zero (it read until memory ran out), a symlink to a file outside the
source (read as whoever runs the job) and an object over --max_image_bytes are quarantined unread
with their reason; a symlink to an image inside its folder is read. The real Beam job on real
files; the listing and the read alone below it."""
import os

import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.quarantine import read_entries
from pipeline.dataset.storage import Storage, TooLarge
from tests.conftest import run_cli
from tests.helpers import png


@pytest.fixture
def source(tmp_path) -> str:
    """cat/ and dog/ with 6 real PNGs each, and the hostile entries."""
    root = tmp_path / "source"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            (root / label / f"{i}.png").write_bytes(png(28, 28, 1, seed=i + 10 * (label == "dog")))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(png(28, 28, 1, seed=99))
    os.mkfifo(root / "cat" / "fifo.png")
    os.symlink("/dev/zero", root / "cat" / "zero.png")
    os.symlink(tmp_path / "outside" / "secret.png", root / "dog" / "secret.png")
    os.symlink("0.png", root / "dog" / "alias.png")              # inside its folder: read
    (root / "dog" / "huge.png").write_bytes(png(28, 28, 1, seed=5) + b"\0" * 5000)
    return str(root)


EXPECTED = {
    "cat/fifo.png": "not read: not a regular file (a FIFO)",
    "cat/zero.png": "not read: a symlink to /dev/zero, outside the folder listed",
    "dog/secret.png": "not read: a symlink to {outside}/secret.png, outside the folder listed",
    "dog/huge.png": "too large: 5,",
}


def test_the_job_quarantines_what_it_must_not_read(source, tmp_path):
    output = str(tmp_path / "out")
    result = run_cli(["pipeline", "--source", source, "--output", output, "--num_readers", "1",
                      "--splits", "train:0.5,test:0.5", "--max_image_bytes", "3000"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(Storage(), output)
    reasons = {q["id"]: q["reason"] for q in read_entries(Storage(), output, manifest.quarantine)}
    outside = os.path.join(str(tmp_path), "outside")
    for key, reason in EXPECTED.items():
        assert reasons.get(key, "").startswith(reason.format(outside=outside)), (key, reasons)
    assert manifest.duplicates == 1                      # dog/alias.png is dog/0.png: read, deduplicated
    assert sum(s.num_records for s in manifest.splits.values()) == 12


def test_the_local_listing_and_read_never_touch_them(source, tmp_path):
    storage, skipped = Storage(), []
    listed = {os.path.relpath(url, source): size for url, size in storage.list(source, skipped)}
    assert "cat/fifo.png" not in listed and "cat/zero.png" not in listed and "dog/secret.png" not in listed
    assert listed["dog/alias.png"] == listed["dog/0.png"]
    assert {os.path.relpath(url, source) for url, _ in skipped} == {"cat/fifo.png", "cat/zero.png", "dog/secret.png"}
    with pytest.raises(OSError, match="not a regular file \\(a FIFO\\)"):      # would block forever
        storage.read_bytes(os.path.join(source, "cat", "fifo.png"))
    with pytest.raises(OSError, match="not a regular file \\(a character device\\)"):
        storage.read_bytes("/dev/zero")
    with pytest.raises(TooLarge, match="more than the 100 bytes"):
        storage.read_bytes(os.path.join(source, "dog", "huge.png"), max_bytes=100)
