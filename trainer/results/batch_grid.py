"""Pictures of what the model is fed (issue 28): `train_batch.png`, the first augmented training
batch of rank 0, and `eval_batch.png`, the first batch of the evaluation view, as grids of tiles
with each tile's label under it, the standardisation undone, written beside the report when a
run starts. A sideways, cropped-away or washed-out input is then seen at a glance, not found by
reading code."""
from __future__ import annotations

import os

import numpy as np

from pipeline.dataset.storage import join

TILES = 64                  # at most this many images of a batch (8 x 8)
MIN_SIDE = 96               # small images are enlarged (nearest) to at least this, to be seen
CAPTION = 14                # pixels of text under each tile
NAMES = ("train_batch.png", "eval_batch.png")


def batch_urls(report_url: str) -> dict[str, str]:
    """{name: URL} of the two pictures, beside the report."""
    base = report_url.rsplit("/", 1)[0] if "/" in report_url else "."
    return {name[:-4]: join(base, name) for name in NAMES}


def write_batches(storage, inputs, classes: list[str], standardize, report_url: str, local_dir: str) -> dict:
    """Both pictures from this rank's inputs (trainer/input/rank_inputs.py): the training batch
    at (epoch 0, batch 0), the first batch of the validation split (the test split without one).
    Returns {name: URL}."""
    split = "validation" if inputs.validation_count else "test"
    batches = {"train_batch": inputs.training((0, 0)),
               "eval_batch": inputs.evaluation(split, inputs.batch_size)}
    os.makedirs(local_dir, exist_ok=True)
    urls = batch_urls(report_url)
    for name, ds in batches.items():
        images, labels = next(iter(ds))
        path = os.path.join(local_dir, f"{name}.png")
        grid(visible(images.numpy(), standardize), captions(labels, classes)).save(path)
        storage.upload(path, urls[name])
    return urls


def visible(images: np.ndarray, standardize) -> np.ndarray:
    """Model input (standardised floats) -> uint8 pixels, the standardisation undone."""
    if standardize.mean is not None and standardize.std is not None:
        images = images * np.asarray(standardize.std, np.float32) + np.asarray(standardize.mean, np.float32)
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def captions(labels, classes: list[str]) -> list[str]:
    """One line per image: its class, or for several heads each attribute's value."""
    if isinstance(labels, dict):
        parts = {name: np.asarray(values).reshape(-1) for name, values in sorted(labels.items())}
        count = len(next(iter(parts.values())))
        return [" ".join(f"{name.removesuffix('_output')}={int(v[i])}" for name, v in parts.items())
                for i in range(count)]
    return [classes[int(i)] if 0 <= int(i) < len(classes) else str(int(i)) for i in np.asarray(labels).reshape(-1)]


def grid(images: np.ndarray, texts: list[str], lines: int = 1):
    """A PIL image: up to TILES tiles in rows of up to 8, each captioned (`lines` lines of text
    under each tile: a caption's lines are separated by newlines)."""
    from PIL import Image, ImageDraw

    images = images[:TILES]
    count, height, width, channels = images.shape
    scale = max(1, -(-MIN_SIDE // min(height, width)))
    tile_h, tile_w = height * scale, width * scale
    caption = CAPTION * lines
    columns = min(8, count)
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * (tile_w + 2), rows * (tile_h + caption + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, text) in enumerate(zip(images, texts)):
        pixels = image[..., 0] if channels == 1 else image[..., :3]
        tile = Image.fromarray(pixels, "L" if channels == 1 else "RGB").convert("RGB")
        left, top = (k % columns) * (tile_w + 2), (k // columns) * (tile_h + caption + 2)
        sheet.paste(tile.resize((tile_w, tile_h), Image.NEAREST), (left, top))
        for n, line in enumerate(text.split("\n")[:lines]):
            draw.text((left + 2, top + tile_h + 1 + n * CAPTION), line[: max(4, tile_w // 6)], fill="black")
    return sheet
