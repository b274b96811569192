"""Labels files past the pre-flight window (issue 26, item 8): a bad row late in the file (a CSV
field over the csv module's limit, bytes that are not UTF-8, a line that is not JSON) is one
quarantine entry with its line number, not the end of the job; a 256 MiB line without a newline
is one bad row, and reading it costs what reading the file costs (bytes counted, not time)."""
import os

import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.quarantine import read_entries
from pipeline.dataset.storage import Storage
from pipeline.sources.labels import MAX_ROW_BYTES, ReadLabelsPart, SplitLabelsFile
from tests.conftest import run_cli
from tests.helpers import png

PADDING = [",,".encode() + b"x" * 100_000 + b"\n"] * 12      # 1.2 MB of rows without a key: skipped


def test_bad_rows_after_the_preflight_window_are_quarantined_with_their_line(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    rows = [b"key,label,note\n"] + PADDING
    for i in range(8):
        (source / f"{i}.png").write_bytes(png(28, 28, 1, seed=i))
    rows += [f"{i}.png,{'cat' if i % 2 else 'dog'},\n".encode() for i in range(4)]
    rows += [b"4.png,cat," + b"y" * 200_000 + b"\n",            # line 18: a field over 128 KiB
             b"5.png,d\xffog,\n"]                                  # line 19: not UTF-8
    rows += [f"{i}.png,{'cat' if i % 2 else 'dog'},\n".encode() for i in range(6, 8)]
    (source / "labels.csv").write_bytes(b"".join(rows))
    output = str(tmp_path / "out")
    result = run_cli(["pipeline", "--source", str(source), "--output", output, "--num_readers", "1",
                      "--splits", "train:0.5,test:0.5"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(Storage(), output)
    reasons = {q["id"]: q["reason"] for q in read_entries(Storage(), output, manifest.quarantine)}
    labels = str(source / "labels.csv")
    assert reasons[f"{labels} line 18"].startswith("bad labels row: line 18 is not valid CSV: field larger")
    assert reasons[f"{labels} line 19"] == "bad labels row: line 19 is not UTF-8 text"
    assert reasons["4.png"].startswith("missing label") and reasons["5.png"].startswith("missing label")
    assert sum(s.num_records for s in manifest.splits.values()) == 6      # 0-3 and 6-7, after the bad rows


class CountingStorage(Storage):
    """The real local storage, counting the bytes each ranged read returns."""
    read = 0

    def read_range(self, url, start, end):
        data = super().read_range(url, start, end)
        CountingStorage.read += len(data)
        return data


def read_parts(storage, url):
    rows, bad = [], []
    for part in SplitLabelsFile(storage).process(url):
        for out in ReadLabelsPart(storage).process(part):
            (bad if hasattr(out, "tag") else rows).append(getattr(out, "value", out))
    return rows, bad


def test_a_256_mib_line_is_one_bad_row_read_in_linear_work(tmp_path):
    path = str(tmp_path / "labels.jsonl")
    with open(path, "wb") as f:
        f.write(b'{"key": "a.png", "label": "cat"}\n{"key": "b.png", "label": "')
        for _ in range(256):
            f.write(b"z" * 2**20)                             # no newline for 256 MiB
        f.write(b'"}\n{oops\n{"key": "c.png", "label": "dog"}\n')
    size = os.path.getsize(path)
    CountingStorage.read = 0
    rows, bad = read_parts(CountingStorage(), path)
    assert [key for key, _ in rows] == ["a.png", "c.png"]
    assert [q["reason"] for q in bad] == [
        f"bad labels row: line 2 (at byte 33) is longer than {MAX_ROW_BYTES:,} bytes",
        "bad labels row: line 1 after byte 268435456 is not JSON: Expecting property name enclosed "
        "in double quotes: line 1 column 2 (char 1)"]
    parts = -(-size // (64 * 2**20))
    # Each part reads its range (and one byte before it) plus at most one row past its end.
    assert CountingStorage.read <= size + parts * (MAX_ROW_BYTES + 2), (CountingStorage.read, size)


@pytest.mark.parametrize("line, problem", [
    (b'{"key": "x.png", "label": "c\xffat"}', "is not UTF-8 text"),
    (b'["not", "an", "object"]', 'has no "key"'),
    (b'{"key": "x.png", "label": "' + b"q" * (MAX_ROW_BYTES + 1) + b'"}', "is longer than"),
], ids=["not-utf8", "no-key", "too-long"])
def test_one_bad_jsonl_row_is_one_entry_and_the_rest_is_read(tmp_path, line, problem):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"key": "a.png", "label": "cat"}\n' + line + b'\n{"key": "b.png", "label": "dog"}\n')
    rows, bad = read_parts(Storage(), str(path))
    assert [key for key, _ in rows] == ["a.png", "b.png"]
    assert len(bad) == 1 and bad[0]["reason"].startswith(f"bad labels row: line 2 {problem}"), bad
