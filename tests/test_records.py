"""The record format: what the pipeline writes is exactly what the trainer parses."""
import pytest
import tensorflow as tf

from pipeline.dataset import records
from tests.helpers import png


def sample() -> records.ImageRecord:
    return records.ImageRecord(id="train/00042.png", image=png(7, 5, 3), image_format="png",
                               height=7, width=5, channels=3, label=4, label_name="Coat")


def test_encode_decode_round_trip_keeps_every_feature():
    record = sample()
    assert records.decode_example(records.encode_example(record)) == record


def test_trainer_parse_spec_reads_every_feature_the_pipeline_writes():
    record = sample()
    parsed = tf.io.parse_single_example(records.encode_example(record), records.parse_spec())
    assert set(parsed) == set(records.FEATURE_TYPES)
    assert parsed[records.IMAGE].numpy() == record.image
    assert parsed[records.IMAGE_FORMAT].numpy() == b"png"
    assert parsed[records.ID].numpy() == record.id.encode()
    assert parsed[records.LABEL_NAME].numpy() == b"Coat"
    assert [parsed[k].numpy() for k in (records.HEIGHT, records.WIDTH, records.CHANNELS,
                                         records.LABEL)] == [7, 5, 3, 4]
    decoded = tf.io.decode_image(parsed[records.IMAGE]).numpy()
    assert decoded.shape == (7, 5, 3)


def test_encoding_is_deterministic():
    assert records.encode_example(sample()) == records.encode_example(sample())


def with_attributes() -> records.ImageRecord:
    return records.ImageRecord(id="cs001.png", image=png(4, 4, 3), image_format="png", height=4,
                               width=4, channels=3, label=2, label_name="2",
                               attributes={"eye_color": 1, "hair": 2})


def test_our_example_bytes_equal_tensorflows():
    """pipeline/example_proto.py declares tf.train.Example itself: same bytes as TF's own."""
    for record in (sample(), with_attributes()):
        ours = records.encode_example(record)
        theirs = tf.train.Example.FromString(ours)
        assert theirs.SerializeToString(deterministic=True) == ours
        assert theirs.features.feature["id"].bytes_list.value == [record.id.encode()]


def test_attribute_labels_round_trip_and_parse():
    record = with_attributes()
    assert records.decode_example(records.encode_example(record)) == record
    parsed = tf.io.parse_single_example(records.encode_example(record),
                                        records.parse_spec(["eye_color", "hair"]))
    assert parsed["label/eye_color"].numpy() == 1 and parsed["label/hair"].numpy() == 2


def test_our_tfrecord_files_read_in_tensorflow_and_back(tmp_path):
    from pipeline.dataset import tfrecord

    data = [records.encode_example(sample()), b"", b"x" * 100_000]
    path = tmp_path / "a.tfrecord"
    with open(path, "wb") as f:
        tfrecord.write_records(f, data)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == data
    tf_path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(tf_path) as writer:
        for d in data:
            writer.write(d)
    assert open(tf_path, "rb").read() == path.read_bytes()
    with open(path, "rb") as f:
        assert list(tfrecord.read_records(f)) == data
    path.write_bytes(path.read_bytes()[:-3])
    with open(path, "rb") as f, pytest.raises(tfrecord.CorruptRecord, match="truncated"):
        list(tfrecord.read_records(f, "a.tfrecord"))
