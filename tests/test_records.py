"""The record format: what the pipeline writes is exactly what the trainer parses."""
import tensorflow as tf

from pipeline import records
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
