"""The job's steps that must not gather everything in one worker (issue 16, "At a billion
images"): the labels file read in parts by byte ranges, the quarantine list written as files
by the workers. Real files on disk and the real S3 server; the quarantine files through a real
Beam pipeline (in-process DirectRunner) on a handful of elements."""
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from pipeline import quarantine_files
from pipeline.dataset.quarantine import entry
from pipeline.dataset.storage import Storage
from pipeline.elements import QuarantineFileInfo
from pipeline.sources.labels import ReadLabelsPart, SplitLabelsFile, parse_labels

CSV = "key,label,split\n" + "".join(
    f'img/{i:04d}.png,"class, {i % 7}",{"test" if i % 5 == 0 else ""}\n' for i in range(300)
) + "img/é-unicode.png,Ünïcode,\nimg/last.png,last,"         # no newline at the very end
JSONL = "".join(json.dumps({"key": f"k{i}", "label": f"c{i % 3}", "split": ""}) + "\n"
                for i in range(200))


def read_in_parts(storage, url, range_bytes):
    rows = []
    for part in SplitLabelsFile(storage, range_bytes).process(url):
        rows += list(ReadLabelsPart(storage).process(part))
    return rows


@pytest.mark.parametrize("range_bytes", [1, 7, 64, 1000, 10**6])
@pytest.mark.parametrize("name, text", [("labels.csv", CSV), ("labels.jsonl", JSONL)])
def test_the_labels_file_read_in_parts_gives_every_row_once(tmp_path, storage, name, text, range_bytes):
    local = tmp_path / name
    local.write_text(text, encoding="utf-8")
    storage.ensure_bucket("s3://scale")
    remote = f"s3://scale/{range_bytes}/{name}"
    storage.write_text(remote, text)
    whole = list(parse_labels(text, name))
    assert len(whole) == (302 if name.endswith(".csv") else 200)
    assert read_in_parts(Storage(), str(local), range_bytes) == whole
    if range_bytes >= 64:                    # (1-byte parts over HTTP: slow, same code path)
        assert read_in_parts(storage, remote, range_bytes) == whole


def test_the_quarantine_is_written_as_sorted_files_with_their_counts(tmp_path):
    entries = [entry(f"id-{i:02d}", f"s3://raw/{i}", "corrupt image: truncated" if i % 3 else "no image")
               for i in range(10)]
    def infos_match(infos):            # runs in the pipeline, on the infos it returned
        assert sum(i.entries for i in infos) == 10 and len(infos) <= 4, infos
        assert all(i.file.endswith("-of-00004.jsonl") for i in infos), infos
        assert sum(n for i in infos for n in i.by_reason.values()) == 10

    with BeamTestPipeline() as p:
        infos = (p | beam.Create(entries[::-1])
                 | quarantine_files.WriteQuarantine(Storage(), str(tmp_path), per_file=3))
        assert_that(infos, infos_match)
    files = sorted(tmp_path.glob("quarantine-*-of-00004.jsonl"))
    written = [[json.loads(line) for line in f.read_text().splitlines()] for f in files]
    assert sorted(q["id"] for part in written for q in part) == [q["id"] for q in entries]
    assert all(part == sorted(part, key=lambda q: q["id"]) for part in written)


def test_the_quarantine_summary_adds_the_files_up():
    infos = [QuarantineFileInfo("quarantine-00001-of-00002.jsonl", 2, {"no image": 2}),
             QuarantineFileInfo("quarantine-00000-of-00002.jsonl", 3, {"no image": 1, "corrupt image": 2})]
    assert quarantine_files.summary(infos) == {
        "count": 5, "by_reason": {"corrupt image": 2, "no image": 3},
        "files": ["quarantine-00000-of-00002.jsonl", "quarantine-00001-of-00002.jsonl"]}
    assert quarantine_files.summary([]) == {"count": 0, "by_reason": {}, "files": []}
    assert quarantine_files.file_count(10**9 // 20) == 250       # 5 % of 10^9 in 250 files
