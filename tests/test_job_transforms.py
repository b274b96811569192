"""Each composite transform of job.py alone, on a handful of elements, as Beam's own examples
test theirs (TestPipeline + assert_that): the real in-process DirectRunner, real PNGs, a local
temporary folder as the store. (WriteQuarantine's is in tests/test_scale.py.)"""
import hashlib

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.check import CheckRows, FindLabelSpace
from pipeline.dataset import naming, records, tfrecord
from pipeline.dataset.storage import Storage
from pipeline.dedupe import DropDuplicates
from pipeline.elements import Candidate, LabelSpace, QuarantineFileInfo
from pipeline.images import prepare_image
from pipeline.publish import Publish, read_request
from pipeline.shard_file import ShardBuilder
from pipeline.shard_writer import WriteShard, WriteShards
from pipeline.sources.files import ReadFileRows
from pipeline.sources.rows import image_row
from tests.helpers import png

SPACE = LabelSpace(("cat", "dog"))
MAX_PIXELS = 10_000


def reasons(entries) -> list[tuple[str, str]]:
    """(id, reason kind) of quarantine entries, sorted: what a matcher compares."""
    return sorted((e["id"], e["reason"].split(":")[0]) for e in entries)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_ids(path) -> list[str]:
    with open(path, "rb") as f:
        return [records.decode_example(r).id for r in tfrecord.read_records(f, str(path))]


# -- ReadSource (files) ----------------------------------------------------------------------
def test_files_become_rows_in_their_layout(tmp_path):
    for key in ("cat/1.png", "dog/2.png", "3.png", ".hidden/4.png"):
        (tmp_path / key).parent.mkdir(exist_ok=True)
        (tmp_path / key).write_bytes(png(8, 8, 1))
    labels = tmp_path / "labels.csv"
    labels.write_text("key,label\ncat/1.png,cat\ngone.png,dog\n")
    with BeamTestPipeline() as p:
        rows, bad = p | "Folders" >> ReadFileRows(Storage(), str(tmp_path), "folders", str(labels))
        labelled, unlabelled = p | "Labels" >> ReadFileRows(Storage(), str(tmp_path), "labels", str(labels))
        assert_that(rows | "ByFolder" >> beam.Map(lambda r: (r["id"], r["label"], r["url"])), equal_to([
            ("cat/1.png", "cat", str(tmp_path / "cat/1.png")), ("dog/2.png", "dog", str(tmp_path / "dog/2.png")),
            ("3.png", None, str(tmp_path / "3.png"))]), label="FolderRows")
        assert_that(bad, equal_to([]), label="NoneRejected")
        assert_that(labelled | "ByLabel" >> beam.Map(lambda r: (r["id"], r["label"])),
                    equal_to([("cat/1.png", "cat")]), label="LabelRows")
        assert_that(unlabelled | beam.combiners.ToList() | beam.Map(reasons), equal_to([[
            ("3.png", "missing label"), ("dog/2.png", "missing label"), ("gone.png", "no image")]]),
            label="Unlabelled")


# -- LabelSpace ------------------------------------------------------------------------------
def test_the_label_space_is_the_sorted_distinct_labels_or_the_given_classes():
    rows = [image_row(f"{i}.png", f"/in/{i}.png", 10, label) for i, label in enumerate(["dog", "cat", None, "dog"])]
    with BeamTestPipeline() as p:
        found = p | "Rows" >> beam.Create(rows) | "Found" >> FindLabelSpace("folders", None, None)
        given = p | "Same" >> beam.Create(rows) | "Given" >> FindLabelSpace("labels", ["zebra", "cat"], None)
        assert_that(found, equal_to([LabelSpace(("cat", "dog"))]), label="Distinct")
        assert_that(given, equal_to([LabelSpace(("zebra", "cat"))]), label="AsGiven")


def test_attribute_files_give_one_class_list_per_attribute():
    rows = [image_row("a.png", "/in/a.png", 10, attributes={"hair": (2, 3), "eye": (0, 2)}),
            image_row("b.png", "/in/b.png", 10, attributes={"hair": (0, 3), "eye": (1, 2)})]
    with BeamTestPipeline() as p:
        space = p | beam.Create(rows) | FindLabelSpace("attributes", None, "hair")
        assert_that(space, equal_to([LabelSpace(("0", "1", "2"), "hair",
                                                {"eye": ("0", "1"), "hair": ("0", "1", "2")})]))


# -- CheckRows -------------------------------------------------------------------------------
def test_rows_become_candidates_or_quarantine_entries_with_a_reason():
    rows = [image_row("1.png", "/in/1.png", 70, "dog", "test"),
            image_row("2.png", "/in/2.png", 10, "horse", "train"),
            image_row("3.png", "/in/3.png", 10, None, "train"),
            image_row("4.png", "/in/4.png", 10, "cat", "holdout"),
            dict(image_row("5", "cassandra://h/ks/t/5", 0, "cat", "train"), url=None, image=b"")]
    with BeamTestPipeline() as p:
        space = p | "Space" >> beam.Create([SPACE])
        candidates, bad = p | beam.Create(rows) | CheckRows({"train": 1.0}, space)
        assert_that(candidates, equal_to([Candidate("1.png", "/in/1.png", "/in/1.png", None, 70, "test",
                                                    1, "dog", {})]), label="Candidates")
        assert_that(bad | beam.combiners.ToList() | beam.Map(reasons), equal_to([[
            ("2.png", "unknown label"), ("3.png", "missing label"), ("4.png", "unknown split"),
            ("5", "empty image")]]), label="Quarantined")


# -- WriteShards -----------------------------------------------------------------------------
def test_shards_are_written_from_the_candidates_with_their_counts(tmp_path):
    images = {f"{i}.png": png(8, 8, 1, seed=i) for i in range(3)}
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
    candidates = [Candidate(name, str(tmp_path / name), str(tmp_path / name), None, len(images[name]), "train",
                            i % 2, SPACE.classes[i % 2], {}) for i, name in enumerate(images)]   # listed sizes
    candidates += [Candidate("inline", "cassandra://h/ks/t/inline", None, png(8, 8, 1, seed=9), 100,
                             "train", 0, "cat", {}),
                   Candidate("bad.png", "/in/bad.png", None, b"not an image", 100, "train", 0, "cat", {}),
                   Candidate("0.png", "/zz/0.png", None, png(8, 8, 1, seed=7), 100, "train", 0,
                             "cat", {})]                 # an id seen twice: the first source kept
    staging = tmp_path / "staging"
    writer = WriteShard(Storage(), str(staging), "t", MAX_PIXELS)
    template = naming.shard_files("t", "train")

    def match_infos(infos):
        assert sum(i.records for i in infos) == 4, infos
        assert sum(sum(i.class_counts) for i in infos) == 4
        assert {i.shards for i in infos} == {2} and all(i.file == template.name(i.index, 2) for i in infos)
        assert all(sum(i.heights.values()) == i.records for i in infos)
        assert all(sum(p.pixels for p in i.pixel_stats.values()) == 64 * i.records for i in infos)

    with BeamTestPipeline() as p:
        space = p | "Space" >> beam.Create([SPACE])
        infos, bad, hashes = (p | beam.Create(candidates)
                              | WriteShards(writer, space, num_shards=2, num_readers=1, target_shard_bytes=2**20))
        assert_that(infos, match_infos, label="Infos")
        assert_that(bad | beam.combiners.ToList() | beam.Map(reasons),
                    equal_to([[("0.png", "duplicate id"), ("bad.png", "not an image (unrecognised bytes)")]]),
                    label="Quarantined")
        assert_that(hashes | beam.Map(lambda h: (h[0], h[1][0])),
                    equal_to([(sha256(images[n]), n) for n in images] + [(sha256(png(8, 8, 1, seed=9)), "inline")]),
                    label="Hashes")
    written = sorted(staging.glob("t-train.tfrecord-*"))
    assert sorted(i for path in written for i in stored_ids(path)) == ["0.png", "1.png", "2.png", "inline"]


# -- DropDuplicates --------------------------------------------------------------------------
def shard(staging, index: int, ids: list[str], seeds: list[int]):
    builder = ShardBuilder(SPACE)
    for record_id, seed in zip(ids, seeds):
        builder.add(prepare_image(png(8, 8, 1, seed=seed)), record_id, 0, "cat", {})
    file = naming.shard_files("t", "train").name(index, 2)
    return builder.write(Storage(), str(staging), "train", index, 2, file)


def test_a_second_copy_of_the_same_bytes_is_dropped_from_a_new_copy_of_its_shard(tmp_path):
    first, second = shard(tmp_path, 0, ["a", "b"], [1, 2]), shard(tmp_path, 1, ["c", "d"], [3, 1])
    same = sha256(png(8, 8, 1, seed=1))
    hashes = [(same, ("a", "/in/a", first.file)), (same, ("d", "/in/d", second.file)),
              (sha256(png(8, 8, 1, seed=2)), ("b", "/in/b", first.file)),
              (sha256(png(8, 8, 1, seed=3)), ("c", "/in/c", second.file))]
    with BeamTestPipeline() as p:
        space = p | "Space" >> beam.Create([SPACE])
        infos = p | "Infos" >> beam.Create([first, second])
        kept, bad = (infos, p | "Hashes" >> beam.Create(hashes)) | DropDuplicates(
            Storage(), str(tmp_path), MAX_PIXELS, space)
        assert_that(kept | beam.Map(lambda i: (i.file, i.staged, i.records)),
                    equal_to([(first.file, None, 2), (second.file, naming.deduped(second.file), 1)]),
                    label="Kept")
        assert_that(bad | beam.Map(lambda e: (e["id"], e["reason"])),
                    equal_to([("d", "duplicate: the same image bytes as a")]), label="Quarantined")
    assert stored_ids(tmp_path / naming.deduped(second.file)) == ["c"]
    assert stored_ids(tmp_path / second.file) == ["c", "d"]           # the writer's file: untouched


# -- Publish ---------------------------------------------------------------------------------
def test_the_publish_request_is_staged_complete_and_the_same_whatever_the_order(tmp_path):
    source = {"layout": "folders", "images": "/in", "labels": None, "span": None}
    quarantined = [QuarantineFileInfo(naming.QUARANTINE_FILES.name(i, 2), 1, {"no image": 1}) for i in (1, 0)]
    staged = []
    for run, order in enumerate([1, -1]):
        staging = tmp_path / f"staging-{run}"
        only = shard(staging, 1, ["a", "b"], [1, 2])       # index 0 of 2 has no record
        with BeamTestPipeline() as p:
            space = p | "Space" >> beam.Create([SPACE])
            infos = p | "Infos" >> beam.Create([only])
            bad = p | "Quarantine" >> beam.Create(quarantined[::order])
            url = (infos, bad) | Publish(Storage(), str(staging), "t", source, space)
            assert_that(url, equal_to([str(staging)]))
        request = read_request(Storage(), str(staging))
        assert [(s.index, s.records) for s in request.shards] == [(0, 0), (1, 2)]
        assert (staging / request.shards[0].file).stat().st_size == 0          # the empty shard's file
        assert [q.file for q in request.quarantine] == sorted(q.file for q in quarantined)
        assert (request.name, request.space, request.source) == ("t", SPACE, source)
        staged.append((staging / naming.REQUEST_NAME).read_bytes())
    assert staged[0] == staged[1]
