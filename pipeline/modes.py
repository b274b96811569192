"""Pixel-mode conversion that is right for every mode Pillow opens from a PNG or JPEG.

Pillow's own `convert` is wrong for three of them: 16-bit grey (`I;16`, `I`) to 8 bits clips
every value above 255 (a 0/255 silhouette) instead of scaling; RGBA/LA/transparent-palette to
RGB/L drops the alpha channel, so whatever colour a transparent pixel happens to hold shows.
Here 16-bit values are scaled (v * 255 / 65535, rounded) and transparent pixels are composited
onto a white background (how a browser shows them on a page; a product photo cut out on a
transparent background becomes one on white). CMYK goes through Pillow's conversion.
"""
from __future__ import annotations

import numpy as np

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")
ALPHA_MODES = ("LA", "RGBA", "PA")
BACKGROUND = 255                 # white, on the 0..255 scale
STRIP_PIXELS = 2**20             # pixels converted at once: int64 arithmetic on strips, never a
                                 # whole 50-Mpx image (8 bytes a value: 1.6 GB for RGBA; issue 26)
# Pillow's transpose that turns a decoded image upright, by EXIF orientation (PIL.ImageOps.exif_transpose's).
UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
           6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


def convert(img, mode: str):
    """`img` (a PIL image) in `mode` (L, LA, RGB or RGBA)."""
    from PIL import Image

    if img.mode == mode:
        return img
    if img.mode in SIXTEEN_BIT:
        img = Image.fromarray(scale_to_8_bit(np.asarray(img)), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ALPHA_MODES and mode not in ALPHA_MODES:
        img = onto_background(img)
    return img if img.mode == mode else img.convert(mode)


def upright(img, orientation: int):
    """`img` turned as its EXIF orientation says (1: as it is)."""
    from PIL import Image

    return img if orientation == 1 else img.transpose(getattr(Image.Transpose, UPRIGHT[orientation]))


def scale_to_8_bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded to nearest (65535 -> 255, 32896 -> 128)."""
    out = np.empty(values.shape, np.uint8)
    for rows in strips(values.shape):
        wide = np.clip(values[rows].astype(np.int64), 0, 65535)
        out[rows] = (wide * 255 + 32767) // 65535
    return out


def onto_background(img):
    """LA/RGBA -> L/RGB: each pixel blended with white by its alpha, rounded to nearest. Strip
    by strip into the new image, so no full-size array exists beside the two images."""
    from PIL import Image

    out = Image.new("L" if img.mode == "LA" else "RGB", img.size)
    for rows in strips((img.height, img.width)):
        box = (0, rows.start, img.width, min(img.height, rows.stop))
        wide = np.asarray(img.crop(box)).astype(np.int64)
        colour, alpha = wide[..., :-1], wide[..., -1:]
        blended = ((colour * alpha + BACKGROUND * (255 - alpha) + 127) // 255).astype(np.uint8)
        out.paste(Image.fromarray(blended[..., 0] if out.mode == "L" else blended, out.mode), box[:2])
    return out


def strips(shape, pixels: int = STRIP_PIXELS) -> list[slice]:
    """Row ranges of an image of `shape` (height, width, ...) of about `pixels` each."""
    height, width = shape[0], max(1, shape[1])
    step = max(1, pixels // width)
    return [slice(top, top + step) for top in range(0, height, step)]
