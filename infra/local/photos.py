"""Real photos of many sizes, from files that installed packages ship (nothing is downloaded):
the sample photos of scikit-image (`skimage/data/`: astronaut, coffee, chelsea, rocket, ...),
the 20 real CIFAR-10 PNGs inside foolbox's wheel, and Fashion-MNIST items pasted at random sizes
and aspect ratios into larger canvases, saved as JPEG (a variable-size set large enough to learn).

Written in the `folders` layout (<out>/<class>/<name>.<ext>), locally or to s3://:

    python -m infra.local.photos OUT                   # the samples and CIFAR-10 PNGs
    python -m infra.local.photos OUT --fashion 6000    # + 6,000 pasted Fashion-MNIST JPEGs
    python -m infra.local.photos OUT --fashion 6000 --colour 0.5 --turned 0.1   # as a team's photos are
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import os

import numpy as np

from pipeline.dataset.storage import Storage, join

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# skimage's bundled photos (not its synthetic images), by the class a person would give them.
SAMPLES = {"astronaut.png": "person", "camera.png": "person", "coffee.png": "cup",
           "chelsea.png": "cat", "rocket.jpg": "rocket", "hubble_deep_field.jpg": "sky",
           "retina.jpg": "eye", "motorcycle_left.png": "motorcycle", "coins.png": "coins",
           "moon.png": "sky", "page.png": "text", "text.png": "text", "horse.png": "horse"}


def package_dir(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed: `make setup` (requirements-dev.txt)")
    return os.path.join(spec.submodule_search_locations[0], *parts)


def samples() -> list[tuple[str, str, bytes]]:
    """(class, file name, original bytes) of skimage's photos and foolbox's CIFAR-10 PNGs. PNG
    photos are also given as JPEG copies (quality 90), so both decoders are exercised."""
    found = []
    for name, label in SAMPLES.items():
        with open(package_dir("skimage", "data", name), "rb") as f:
            data = f.read()
        found.append((label, name, data))
        if name.endswith(".png"):
            found.append((label, name[:-4] + ".jpg", as_jpeg(data)))
    cifar = package_dir("foolbox", "data")
    for name in sorted(os.listdir(cifar)):
        if name.startswith("cifar10_"):                      # cifar10_<i>_<label>.png
            with open(os.path.join(cifar, name), "rb") as f:
                found.append((CIFAR10[int(name[:-4].split("_")[2])], name, f.read()))
    return found


def as_jpeg(data: bytes, quality: int = 90) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode)
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=quality)
        return out.getvalue()


def pasted_fashion(count: int, split: str = "train", seed: int = 0, colour: float = 0.0,
                   turned: float = 0.0) -> list[tuple[str, str, bytes]]:
    """(class, name, JPEG bytes) of the first `count` Fashion-MNIST items of `split`, each resized
    to 30-200 px (aspect 3/4-4/3) and pasted at a random place on a black canvas up to 30 %
    larger on each side. `colour`: the share of them saved as colour photos instead of grey (the
    item tinted, on a coloured background); `turned`: the share stored turned as a phone does,
    with the EXIF orientation (6 or 8, sometimes 3) that makes them upright again. With both 0
    the photos are those of earlier versions, byte for byte."""
    from PIL import Image

    from infra.local.fashion_mnist import CLASSES, load

    images, labels = load(split)
    rng, looks = np.random.default_rng(seed), np.random.default_rng(seed + 1_000_003)
    made = []
    for i in range(min(count, len(labels))):
        side = rng.uniform(30, 200)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        h, w = max(8, round(side / np.sqrt(aspect))), max(8, round(side * np.sqrt(aspect)))
        item = Image.fromarray(images[i], mode="L").resize((w, h), Image.BILINEAR)
        canvas_h, canvas_w = round(h * rng.uniform(1.0, 1.3)), round(w * rng.uniform(1.0, 1.3))
        canvas = Image.new("L", (canvas_w, canvas_h))
        canvas.paste(item, (int(rng.integers(0, canvas_w - w + 1)), int(rng.integers(0, canvas_h - h + 1))))
        in_colour, orientation = looks.random() < colour, turn_of(looks, turned)
        photo = tinted(canvas, looks) if in_colour else canvas
        made.append((CLASSES[labels[i]].replace("/", "-"), f"{split}-{i:05d}.jpg", as_taken(photo, orientation)))
    return made


def tinted(grey, rng):
    """A grey canvas as a colour photo: the item in a random colour on a dark random background."""
    from PIL import Image

    value = np.asarray(grey, np.float32)[..., None] / 255
    item, background = rng.uniform(120, 255, 3), rng.uniform(0, 90, 3)
    return Image.fromarray((value * item + (1 - value) * background).round().astype(np.uint8), "RGB")


# The transpose that stores an upright photo as a camera held that way does (the inverse of
# PIL.ImageOps.exif_transpose's for each orientation).
STORED_AS = {3: "ROTATE_180", 6: "ROTATE_90", 8: "ROTATE_270"}


def turn_of(rng, share: float) -> int:
    """1, or for `share` of the photos a phone's EXIF orientation: 6 or 8 (portrait), some 3."""
    if rng.random() >= share:
        return 1
    return int(rng.choice([6, 8, 3], p=[0.45, 0.45, 0.1]))


def as_taken(photo, orientation: int, quality: int = 90) -> bytes:
    """JPEG bytes of an upright `photo` stored turned, with the EXIF tag that turns it back."""
    from PIL import Image

    out = io.BytesIO()
    if orientation == 1:
        photo.save(out, format="JPEG", quality=quality)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        photo.transpose(getattr(Image.Transpose, STORED_AS[orientation])).save(
            out, format="JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def write(storage: Storage, root: str, photos: list[tuple[str, str, bytes]]) -> dict[str, bytes]:
    """Write <root>/<class>/<name>; returns {key: bytes} of what was written."""
    if root.startswith("s3://"):
        storage.ensure_bucket(root)
    written = {}
    for label, name, data in photos:
        key = f"{label}/{name}"
        storage.write_bytes(join(root, key), data)
        written[key] = data
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.local.photos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="s3://bucket/prefix or a local folder")
    p.add_argument("--fashion", type=int, default=0, metavar="N",
                   help="also N Fashion-MNIST training items pasted as variable-size JPEGs (default 0)")
    p.add_argument("--colour", type=float, default=0.0, metavar="SHARE",
                   help="share of the pasted items saved as colour photos (default 0: all grey)")
    p.add_argument("--turned", type=float, default=0.0, metavar="SHARE",
                   help="share of the pasted items stored turned with an EXIF orientation (default 0)")
    p.add_argument("--no-samples", action="store_true", help="only the Fashion-MNIST JPEGs")
    args = p.parse_args(argv)
    photos = ([] if args.no_samples else samples()) + pasted_fashion(args.fashion, colour=args.colour,
                                                                      turned=args.turned)
    written = write(Storage(), args.out, photos)
    print(f"{len(written)} photos written to {args.out} "
          f"({sum(map(len, written.values())) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
