"""Mode conversion at ingestion, pixel-exact, on real PNG and JPEG files (written by Pillow's
encoders, read back through the job's own prepare_image)."""
import io

import numpy as np
import pytest
from PIL import Image

from pipeline.images import prepare_image


def encoded(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **options)
    return out.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def sixteen_bit_grey() -> bytes:
    values = np.array([[0, 257, 1000, 32896, 65535]], dtype=np.uint16)
    data = encoded(Image.fromarray(values, "I;16"))
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")      # really a 16-bit PNG
    return data


def test_16_bit_grey_is_scaled_not_clipped():
    prepared = prepare_image(sixteen_bit_grey(), channels=1)
    assert pixels(prepared.data).tolist() == [[0, 1, 4, 128, 255]]   # clipping gave 0/255


def test_16_bit_grey_statistics_use_the_scaled_values_and_the_bytes_are_kept():
    data = sixteen_bit_grey()
    prepared = prepare_image(data)
    assert prepared.data == data and prepared.info.channels == 1
    assert prepared.pixel_sum == pytest.approx(((0 + 1 + 4 + 128 + 255) / 255,))


def test_transparent_palette_becomes_white():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    data = encoded(img, transparency=1)           # palette entry 1 (blue) is transparent
    assert pixels(prepare_image(data, channels=3).data).tolist() == [[[255, 0, 0], [255, 255, 255]]]


def test_la_is_blended_onto_white():
    grey_alpha = np.array([[[0, 0], [0, 255], [0, 128], [200, 255]]], dtype=np.uint8)
    data = encoded(Image.fromarray(grey_alpha, "LA"))
    # (v * a + 255 * (255 - a)) / 255, rounded: transparent -> 255, opaque -> v, half -> 127
    assert pixels(prepare_image(data, channels=1).data).tolist() == [[255, 0, 127, 200]]


def test_rgba_is_blended_onto_white():
    rgba = np.array([[[10, 20, 30, 255], [0, 0, 0, 0], [255, 0, 0, 128]]], dtype=np.uint8)
    data = encoded(Image.fromarray(rgba, "RGBA"))
    rgb = pixels(prepare_image(data, channels=3).data)
    assert rgb.tolist() == [[[10, 20, 30], [255, 255, 255], [255, 127, 127]]]
    grey = pixels(prepare_image(data, channels=1).data)
    assert grey[0, 1] == 255                      # a transparent pixel is white, not black


def test_cmyk_jpeg_is_converted_to_rgb():
    cmyk = np.zeros((16, 16, 4), dtype=np.uint8)
    cmyk[:, 8:, 3] = 255                          # left half no ink (white), right half black
    data = encoded(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=100)
    rgb = pixels(prepare_image(data, channels=3).data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert rgb.shape == (16, 16, 3) and (rgb == expected).all()
    assert rgb[:, :8].min() >= 250 and rgb[:, 8:].max() <= 5


def test_pixel_sums_are_exact_per_channel():
    """The statistics' sums (by channel rows, for speed) equal a plain per-pixel sum."""
    rgb = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    prepared = prepare_image(buffer.getvalue())
    flat = rgb.reshape(-1, 3).astype(np.int64)
    assert prepared.pixel_sum == tuple(float(s) / 255 for s in flat.sum(axis=0))
    assert prepared.pixel_sq_sum == tuple(float(q) / 255**2 for q in (flat ** 2).sum(axis=0))
