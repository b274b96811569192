"""A local Fashion-MNIST dataset (shards + manifest, the published format) written straight from
the Debian package, without Beam: the trainer benchmarks need records fast, not an ingestion.

    python -m benchmarks.trainer_dataset OUT_DIR [--train N] [--test N] [--shards K]"""
from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np

from infra.local.fashion_mnist import CLASSES, load, png_bytes
from pipeline.dataset import records
from pipeline.dataset.manifest import Manifest, Shard, Split, write_manifest
from pipeline.dataset.naming import shard_files
from pipeline.dataset.storage import Storage


def write_split(out, name, split, images, labels, shards) -> Split:
    import tensorflow as tf

    written = []
    for k in range(shards):
        file = shard_files("fmnist", name).name(k, shards)
        path = os.path.join(out, file)
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(k, len(images), shards):
                writer.write(records.encode_example(records.ImageRecord(
                    id=f"{split}/{i:05d}", image=png_bytes(images[i]), image_format="png",
                    height=28, width=28, channels=1, label=int(labels[i]),
                    label_name=CLASSES[int(labels[i])])))
        data = open(path, "rb").read()
        written.append(Shard(file=file, records=len(range(k, len(images), shards)), bytes=len(data),
                             sha256=hashlib.sha256(data).hexdigest()))
    counts = np.bincount(labels, minlength=len(CLASSES)).tolist()
    result = Split(shards=written, class_counts=counts)
    pixels = images.astype(np.float64) / 255.0        # the statistics issue 4 adds to the manifest
    result.pixel_mean, result.pixel_std = [float(pixels.mean())], [float(pixels.std())]
    return result


def build(out: str, train: int, test: int, shards: int, validation: int = 0) -> str:
    os.makedirs(out, exist_ok=True)
    tr_images, tr_labels = load("train")
    te_images, te_labels = load("test")
    splits = {"train": write_split(out, "train", "train", tr_images[validation:validation + train],
                                   tr_labels[validation:validation + train], shards),
              "test": write_split(out, "test", "test", te_images[:test], te_labels[:test], shards)}
    if validation:
        splits["validation"] = write_split(out, "validation", "train", tr_images[:validation],
                                           tr_labels[:validation], shards)
    manifest = Manifest(name="fmnist", classes=list(CLASSES), image_shape=[28, 28, 1], splits=splits,
                        quarantine={"count": 0, "by_reason": {}}, source={"benchmark": True})
    return write_manifest(Storage(), out, manifest)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--train", type=int, default=60000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--validation", type=int, default=0)
    p.add_argument("--shards", type=int, default=8)
    a = p.parse_args()
    print(build(a.out, a.train, a.test, a.shards, a.validation))
