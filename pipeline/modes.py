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


def scale_to_8_bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded to nearest (65535 -> 255, 32896 -> 128)."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def onto_background(img):
    """LA/RGBA -> L/RGB: each pixel blended with white by its alpha, rounded to nearest."""
    from PIL import Image

    pixels = np.asarray(img, dtype=np.int64)
    colour, alpha = pixels[..., :-1], pixels[..., -1:]
    blended = (colour * alpha + BACKGROUND * (255 - alpha) + 127) // 255
    out = blended.astype(np.uint8)
    return Image.fromarray(out[..., 0], "L") if out.shape[-1] == 1 else Image.fromarray(out, "RGB")
