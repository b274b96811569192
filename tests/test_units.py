"""Small pure functions of the ingestion job: validation, splits, shard rule, labels parsing."""
import pytest

from pipeline import images, sharding, splits
from pipeline.dataset import naming
from pipeline.sources.labels import LabelsFileError, parse_labels
from tests.helpers import inspect_image, jpeg, png


def test_inspect_image_describes_png_and_jpeg():
    assert inspect_image(png(28, 20, 1)) == images.ImageInfo("png", 28, 20, 1)
    assert inspect_image(png(8, 8, 3)).channels == 3
    assert inspect_image(jpeg(10, 12)) == images.ImageInfo("jpeg", 10, 12, 3)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty object"),
    (b"hello, I am a text file", "not an image"),
    (png(64, 64, 3)[:200], "corrupt image"),
    (jpeg(64, 64)[:300], "corrupt image"),
])
def test_inspect_image_rejects_bad_bytes_with_a_reason(data, reason):
    with pytest.raises(images.BadImage, match=reason):
        inspect_image(data)


def test_inspect_image_refuses_too_many_pixels_before_decoding():
    with pytest.raises(images.BadImage, match="too many pixels"):
        inspect_image(png(100, 100), max_pixels=5000)


def test_split_assignment_is_stable_and_close_to_the_ratios():
    ratios = splits.parse_ratios("train:0.8,validation:0.1,test:0.1")
    ids = [f"img-{i}" for i in range(20000)]
    first = [splits.assign_split(i, ratios) for i in ids]
    assert first == [splits.assign_split(i, ratios) for i in ids]
    assert abs(first.count("train") / len(ids) - 0.8) < 0.02
    assert abs(first.count("test") / len(ids) - 0.1) < 0.02


@pytest.mark.parametrize("text, message", [
    ("train:0.5,validation:0.2", "sum to 0.7"),
    ("train:0.5,dev:0.5", "unknown split 'dev'"),
    ("train:x,test:1", "not a number"),
])
def test_bad_split_ratios_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        splits.parse_ratios(text)


@pytest.mark.parametrize("records, size, readers, expected", [
    (0, 0, 8, 0),
    (5, 2_000, 8, 1),                  # fewer records than readers: one shard
    (10, 10_000, 8, 8),                # one shard per reader, however small
    (1_000, 300_000, 8, 8),            # 1,000 small images: 8 shards of 125, not 80 of 12
    (1_000, 1_000 * 2**20, 8, 8),      # 1,000 photos of 1 MiB: 8 shards of 125 MiB
    (1_000_000, 300 * 2**20, 8, 104),  # small images: the 10,000-records cap, rounded to 8s
    (1_000_000, 110 * 2**30, 8, 880),  # ImageNet-sized: 110 GiB at 128 MiB per shard
    (10**9, 10**9 * 300, 8, 100_000),  # 10^9 small images: the record cap
    (10**9, 10**9 * 110_000, 256, 819_712),  # 10^9 photos (~100 TiB), 256 readers: by bytes
    (57_000, 20 * 2**20, 3, 6),        # rounded up to a multiple of 3
])
def test_shard_count_rule(records, size, readers, expected):
    assert sharding.num_shards(records, size, readers) == expected


def test_shard_index_is_in_range_and_stable():
    assert all(0 <= sharding.shard_index(f"k{i}", 7) < 7 for i in range(1000))
    assert sharding.shard_index("k1", 7) == sharding.shard_index("k1", 7)
    assert naming.shard_files("fm", "train").name(3, 64) == "fm-train.tfrecord-00003-of-00064"


def test_labels_csv_rows_and_missing_columns():
    rows = dict(parse_labels("key,label,split\na.png,Coat,\nb.png,Bag,test\n", "labels.csv"))
    assert rows == {"a.png": {"label": "Coat", "split": ""}, "b.png": {"label": "Bag", "split": "test"}}
    with pytest.raises(LabelsFileError, match="no column"):
        list(parse_labels("file,class\na.png,Coat\n", "s3://b/labels.csv"))


def test_labels_jsonl_rows_and_bad_lines():
    text = '{"key": "a.png", "label": "Coat", "extra": 1}\n\n{"key": "b.png", "label": "Bag", "split": "test"}\n'
    assert dict(parse_labels(text, "s3://b/labels.jsonl")) == {
        "a.png": {"label": "Coat", "split": ""}, "b.png": {"label": "Bag", "split": "test"}}
    with pytest.raises(LabelsFileError, match="line 2 is not JSON"):
        list(parse_labels('{"key": "a"}\n{oops\n', "labels.jsonl"))


def test_attribute_files_parse_and_refuse_bad_rows():
    from pipeline.sources.attributes import parse_attributes

    assert parse_attributes('"eye_angle", 1, 3\n"hair", 9, 111\n') == {"eye_angle": (1, 3),
                                                                       "hair": (9, 111)}
    for text, message in [('"a", 3, 3\n', "outside 0..2"), ('"a", 1\n', "3 fields"),
                          ("", "no attributes"), ('"a", 1, 2\n"a", 0, 2\n', "twice"),
                          ('"a", x, 2\n', "invalid literal")]:
        with pytest.raises(ValueError, match=message):
            parse_attributes(text)


def test_prepare_image_converts_and_resizes_only_when_asked():
    grey = png(10, 8, 1)
    kept = images.prepare_image(grey)
    assert kept.data == grey and kept.info == images.ImageInfo("png", 10, 8, 1)
    rgb = images.prepare_image(grey, channels=3, size=(4, 6))
    assert rgb.info == images.ImageInfo("png", 4, 6, 3) and rgb.pixels == 24
    assert inspect_image(rgb.data) == rgb.info
    white = images.prepare_image(png(2, 2, 3, seed=1), channels=1)
    assert len(white.pixel_sum) == 1 and 0 <= white.pixel_sum[0] <= 4


def test_duplicates_keep_the_smallest_id():
    from pipeline.dedupe import losers

    copies = [("b", "s3://x/b", "f1"), ("a", "s3://x/a", "f2"), ("c", "s3://x/c", "f1")]
    assert list(losers(("sha", copies))) == [("f1", ("b", "s3://x/b", "a")),
                                             ("f1", ("c", "s3://x/c", "a"))]
    assert list(losers(("sha", copies[:1]))) == []


def test_pixel_statistics_pool_shards_exactly():
    from pipeline.elements import PixelSums
    from pipeline.publish import pixel_statistics

    shard = {1: PixelSums(4, (2.0,), (1.5,))}
    mean, std = pixel_statistics([shard, shard, {}])
    assert mean == [0.5] and std == [round((1.5 / 4 - 0.25) ** 0.5, 6)]
    # Issue 28: grey and colour mixed get the statistics of the RGB view (grey repeated in R, G, B),
    # where they used to get none: 4 grey pixels summing 2 and one black RGB pixel.
    mixed = pixel_statistics([shard, {3: PixelSums(1, (0, 0, 0), (0, 0, 0))}])
    assert mixed == ([0.4] * 3, [round((1.5 / 5 - 0.4 ** 2) ** 0.5, 6)] * 3)
    assert pixel_statistics([{}, {}]) == (None, None)


def test_names_are_built_and_parsed_by_one_template():
    shards = naming.shard_files("fm", "validation")
    assert shards.parse(shards.name(7, 12)) == (7, 12)
    assert shards.parse("fm-train.tfrecord-00007-of-00012") is None        # another split's
    assert naming.QUARANTINE_FILES.parse("quarantine-00002-of-00003.jsonl") == (2, 3)
    assert naming.QUARANTINE_FILES.parse("quarantine.jsonl") is None
    assert naming.is_staging_folder(naming.staging_folder("abc")) and not naming.is_staging_folder("v-1")
    assert naming.is_version_folder(naming.version_folder("0123456789abcdef" * 4))
    assert naming.version_folder("0123456789abcdef" * 4) == "v-0123456789abcdef"


def test_every_flag_of_the_job_takes_both_spellings():
    import argparse

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import IngestOptions

    parser = argparse.ArgumentParser()
    IngestOptions._add_argparse_args(parser)
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--") and "_" in s]
    assert {"--fetch_threads", "--cassandra_retries", "--num_readers"} <= set(flags)
    assert all(s in a.option_strings for a in parser._actions for f in a.option_strings
               if f in flags for s in [f.replace("_", "-")])
    options = PipelineOptions(["--fetch-threads", "3", "--cassandra-page-size=7", "--num_readers", "2"])
    parsed = options.view_as(IngestOptions)
    assert (parsed.fetch_threads, parsed.cassandra_page_size, parsed.num_readers) == (3, 7, 2)
