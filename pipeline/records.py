"""THE record format: what one image looks like inside a TFRecord shard.

Both sides import this module: the Beam job encodes with `encode_example`, the trainer parses
with `parse_spec()`. It depends on TensorFlow's protos only (no Beam, no Keras), so changing a
feature here is the one place the contract between ingestion and training changes.
"""
from __future__ import annotations

import dataclasses

# Feature keys, TFDS-style names. Bump FORMAT_VERSION when a key or its meaning changes.
FORMAT_VERSION = 1
IMAGE = "image/encoded"
IMAGE_FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
LABEL = "label"
LABEL_NAME = "label/name"
ID = "id"

FEATURE_TYPES = {
    IMAGE: "bytes", IMAGE_FORMAT: "bytes", HEIGHT: "int64", WIDTH: "int64",
    CHANNELS: "int64", LABEL: "int64", LABEL_NAME: "bytes", ID: "bytes",
}


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One validated, labelled image as it is stored in a shard."""
    id: str
    image: bytes          # the original encoded bytes (PNG/JPEG), never re-encoded
    image_format: str     # "png" or "jpeg"
    height: int
    width: int
    channels: int
    label: int            # index into the manifest's class list
    label_name: str


def encode_example(record: ImageRecord) -> bytes:
    """Serialize a record as a tf.train.Example."""
    from tensorflow.core.example import example_pb2, feature_pb2

    def _bytes(value: bytes) -> feature_pb2.Feature:
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))

    def _int(value: int) -> feature_pb2.Feature:
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))

    feature = {
        IMAGE: _bytes(record.image),
        IMAGE_FORMAT: _bytes(record.image_format.encode()),
        HEIGHT: _int(record.height),
        WIDTH: _int(record.width),
        CHANNELS: _int(record.channels),
        LABEL: _int(record.label),
        LABEL_NAME: _bytes(record.label_name.encode()),
        ID: _bytes(record.id.encode()),
    }
    example = example_pb2.Example(features=feature_pb2.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def decode_example(serialized: bytes) -> ImageRecord:
    """Parse a serialized Example back into a record (tests and tools; the trainer uses parse_spec)."""
    from tensorflow.core.example import example_pb2

    f = example_pb2.Example.FromString(serialized).features.feature
    return ImageRecord(
        id=f[ID].bytes_list.value[0].decode(),
        image=f[IMAGE].bytes_list.value[0],
        image_format=f[IMAGE_FORMAT].bytes_list.value[0].decode(),
        height=f[HEIGHT].int64_list.value[0],
        width=f[WIDTH].int64_list.value[0],
        channels=f[CHANNELS].int64_list.value[0],
        label=f[LABEL].int64_list.value[0],
        label_name=f[LABEL_NAME].bytes_list.value[0].decode(),
    )


def parse_spec() -> dict:
    """The feature spec for tf.io.parse_single_example / parse_example, built from FEATURE_TYPES."""
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "int64": tf.int64}
    return {key: tf.io.FixedLenFeature([], dtypes[kind]) for key, kind in FEATURE_TYPES.items()}
