"""THE record format: what one image looks like inside a TFRecord shard.

Both sides import this module: the Beam job encodes with `encode_example`, the trainer parses
with `parse_spec()`. Writing records needs neither Beam nor TensorFlow (example_proto.py declares
tf.train.Example's wire format). Changing a feature here is the one place the contract between
ingestion and training changes.
"""
from __future__ import annotations

import dataclasses

# Feature keys, TFDS-style names. Bump FORMAT_VERSION when a key or its meaning changes (a key
# added with a default that keeps older records' meaning, like ORIENTATION, does not: older
# datasets still read).
FORMAT_VERSION = 1
IMAGE = "image/encoded"
IMAGE_FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
CHANNELS = "image/channels"
LABEL = "label"
LABEL_NAME = "label/name"
ID = "id"
# EXIF orientation the decoded pixels still need to be upright (1-8; 1: as stored). Records
# written before it have none: parse_spec's default, 1, is what they meant.
ORIENTATION = "image/orientation"
ATTRIBUTE_PREFIX = "label/"   # + attribute name: one int64 label per attribute (multi-label data)

FEATURE_TYPES = {
    IMAGE: "bytes", IMAGE_FORMAT: "bytes", HEIGHT: "int64", WIDTH: "int64",
    CHANNELS: "int64", LABEL: "int64", LABEL_NAME: "bytes", ID: "bytes", ORIENTATION: "int64",
}
DEFAULTS = {ORIENTATION: 1}       # what a record without the feature means


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One validated, labelled image as it is stored in a shard."""
    id: str
    image: bytes          # the original encoded bytes (PNG/JPEG); re-encoded as PNG only when
                          # the job normalises channels or size
    image_format: str     # "png" or "jpeg"
    height: int           # as stored (encoded); turned by `orientation` when displayed
    width: int
    channels: int
    label: int            # index into the manifest's class list
    label_name: str
    attributes: dict = dataclasses.field(default_factory=dict)   # {attribute: class index}
    orientation: int = 1  # EXIF orientation (pipeline/images.py); the bytes keep their tag


def attribute_key(attribute: str) -> str:
    if not attribute or attribute == "name" or "/" in attribute:
        raise ValueError(f"attribute name {attribute!r} cannot be a feature key")
    return ATTRIBUTE_PREFIX + attribute


def encode_example(record: ImageRecord) -> bytes:
    """Serialize a record as a tf.train.Example (without importing TensorFlow)."""
    from pipeline.dataset import example_proto as pb

    def _bytes(value: bytes):
        return pb.Feature(bytes_list=pb.BytesList(value=[value]))

    def _int(value: int):
        return pb.Feature(int64_list=pb.Int64List(value=[value]))

    feature = {
        IMAGE: _bytes(record.image),
        IMAGE_FORMAT: _bytes(record.image_format.encode()),
        HEIGHT: _int(record.height),
        WIDTH: _int(record.width),
        CHANNELS: _int(record.channels),
        LABEL: _int(record.label),
        LABEL_NAME: _bytes(record.label_name.encode()),
        ID: _bytes(record.id.encode()),
        ORIENTATION: _int(record.orientation),
    }
    for attribute, index in record.attributes.items():
        feature[attribute_key(attribute)] = _int(index)
    example = pb.Example(features=pb.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def decode_example(serialized: bytes) -> ImageRecord:
    """Parse a serialized Example back into a record (tests and tools; the trainer uses parse_spec)."""
    from pipeline.dataset import example_proto as pb

    f = pb.Example.FromString(serialized).features.feature
    return ImageRecord(
        id=f[ID].bytes_list.value[0].decode(),
        image=f[IMAGE].bytes_list.value[0],
        image_format=f[IMAGE_FORMAT].bytes_list.value[0].decode(),
        height=f[HEIGHT].int64_list.value[0],
        width=f[WIDTH].int64_list.value[0],
        channels=f[CHANNELS].int64_list.value[0],
        label=f[LABEL].int64_list.value[0],
        label_name=f[LABEL_NAME].bytes_list.value[0].decode(),
        attributes={key[len(ATTRIBUTE_PREFIX):]: f[key].int64_list.value[0] for key in sorted(f)
                    if key.startswith(ATTRIBUTE_PREFIX) and key != LABEL_NAME},
        orientation=f[ORIENTATION].int64_list.value[0] if ORIENTATION in f else DEFAULTS[ORIENTATION],
    )


def parse_spec(attributes: tuple[str, ...] | list[str] = ()) -> dict:
    """The feature spec for tf.io.parse_single_example / parse_example, built from FEATURE_TYPES,
    plus one int64 label per requested attribute (the manifest's `label_attributes`)."""
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "int64": tf.int64}
    spec = {key: tf.io.FixedLenFeature([], dtypes[kind], default_value=DEFAULTS.get(key))
            for key, kind in FEATURE_TYPES.items()}
    spec.update({attribute_key(a): tf.io.FixedLenFeature([], tf.int64) for a in attributes})
    return spec
