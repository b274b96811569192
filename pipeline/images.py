"""Validate encoded image bytes before they may enter a shard, and normalise them on request.

A JPEG's EXIF orientation (how the camera was held) is read here from the bytes the job already
has; the bytes stay as they are and the record says how to turn the decoded pixels upright
(`image/orientation`, pipeline/dataset/records.py), which every decode path applies. Pixel
statistics are summed strip by strip, so a 7000x7000 RGBA PNG no longer needs a 1.5 GB int64
array (issue 26); how many images a worker decodes at once is bounded by decode_budget.py."""
from __future__ import annotations

import dataclasses
import io

import numpy as np

from pipeline import modes
from pipeline.dataset.image_sizes import MAX_PIXELS, displayed
from pipeline.decode_budget import UNBOUNDED, DecodeBudget, decode_cost

MODE_FOR_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# Channels of the 8-bit image a mode becomes (pipeline/modes.py); P keeps 3 (transparency
# composited onto white), 16-bit grey becomes 8-bit grey.
CHANNELS_BY_MODE = {"1": 1, "L": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "I": 1, "LA": 2, "P": 3,
                    "PA": 3, "RGB": 3, "RGBA": 4, "CMYK": 3}
FORMATS = {"PNG": "png", "JPEG": "jpeg"}
DEFAULT_MAX_PIXELS = MAX_PIXELS
ORIENTATION_TAG = 0x0112          # EXIF IFD0 Orientation, 1-8 (1: upright as stored)
STATS_STRIP_PIXELS = 2**18        # pixels summed at once: ~10 MB of int64 for RGBA


class BadImage(Exception):
    """The bytes are not a usable image; str(e) is the quarantine reason."""


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    format: str
    height: int           # as stored (encoded); `displayed` turns them for orientations 5-8
    width: int
    channels: int
    orientation: int = 1  # EXIF orientation the decoded pixels still need (1: none)

    @property
    def displayed(self) -> tuple[int, int]:
        """(height, width) as a person sees the image."""
        return displayed(self.height, self.width, self.orientation)


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """Bytes ready for a record, what they hold, and their pixel sums for the split statistics."""
    data: bytes
    info: ImageInfo
    pixel_sum: tuple[float, ...]      # per channel, pixel values on the [0, 1] scale
    pixel_sq_sum: tuple[float, ...]
    pixels: int                       # height x width


def prepare_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, channels: int = 0,
                  size: tuple[int, int] | None = None, orientation: bool = True,
                  budget: DecodeBudget = UNBOUNDED) -> PreparedImage:
    """Validate `data` by decoding it fully (a truncated file fails here, not in the trainer);
    convert to `channels` (0: keep) and resize to `size` (h, w, as displayed) when asked,
    re-encoding as PNG only if that changed anything (upright then: a PNG carries no EXIF
    orientation). `orientation`: read a JPEG's EXIF orientation (False: --ignore_orientation,
    every image is taken as stored). The decode waits for room in `budget` (a worker's memory)."""
    img = _opened(data, max_pixels)
    with budget.holding(decode_cost(img.size, size, len(data))), img:
        _decoded(img)
        fmt = FORMATS[img.format]
        turn = _orientation(img) if orientation and fmt == "jpeg" else 1
        mode = MODE_FOR_CHANNELS[channels] if channels else _stats_mode(img.mode)
        normalised = modes.convert(img, mode)
        resize = size and displayed(normalised.height, normalised.width, turn) != tuple(size)
        if (channels and img.mode != mode) or resize:
            normalised = modes.upright(normalised, turn)
            if resize:
                normalised = normalised.resize((size[1], size[0]), _bilinear())
            data, fmt, turn = _encode_png(normalised), "png", 1
        sums, squares = _sums(normalised)
        width, height = normalised.size
    return PreparedImage(
        data=data, info=ImageInfo(fmt, height, width, len(mode), turn),
        pixel_sum=tuple(float(s) / 255 for s in sums),
        pixel_sq_sum=tuple(float(q) / 255**2 for q in squares), pixels=width * height)


def _sums(img) -> tuple[list[int], list[int]]:
    """Per band, the exact integer sum of the 8-bit values and of their squares (the same
    integers whatever order shards are summed in), strip by strip: one contiguous int64 row per
    channel (summing down the columns of a (pixels, channels) array was 30 % of the whole job's
    time, py-spy), but never a full-size int64 copy (a 7000x7000 RGBA PNG needed 1.5 GB for it)."""
    width, height = img.size
    bands = len(img.getbands())
    sums, squares = np.zeros(bands, np.int64), np.zeros(bands, np.int64)
    for rows in modes.strips((height, width), STATS_STRIP_PIXELS):
        box = (0, rows.start, width, min(height, rows.stop))
        part = img if box[1] == 0 and box[3] == height else img.crop(box)
        by_channel = np.ascontiguousarray(np.asarray(part, dtype=np.uint8).reshape(-1, bands).T).astype(np.int64)
        sums += by_channel.sum(axis=1)
        squares += np.einsum("ij,ij->i", by_channel, by_channel)
    return sums.tolist(), squares.tolist()


def _orientation(img) -> int:
    """The EXIF orientation of an opened JPEG, 1 when absent or not one of the 8 values."""
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
    except Exception:            # a malformed EXIF block: the image is still an image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _stats_mode(mode: str) -> str:
    channels = CHANNELS_BY_MODE.get(mode)
    if channels is None:
        raise BadImage(f"unsupported pixel mode {mode}")
    return MODE_FOR_CHANNELS[channels]


def _opened(data: bytes, max_pixels: int):
    """Open (the header only) and check format and size, before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty object (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised bytes)") from None
    except Image.DecompressionBombError as e:     # PIL's own limit, before ours could look
        raise BadImage(f"too many pixels: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"corrupt image: {e}") from None
    if img.format not in FORMATS:
        raise BadImage(f"unsupported image format {img.format}")
    width, height = img.size
    if width * height > max_pixels:   # checked before decoding: decompression bombs
        raise BadImage(f"too many pixels: {width}x{height} > {max_pixels}")
    return img


def _decoded(img) -> None:
    """Decode fully, turning every way the bytes can be bad into a BadImage reason."""
    from PIL import Image

    try:
        img.load()
        _stats_mode(img.mode)
    except Image.DecompressionBombError as e:
        raise BadImage(f"too many pixels: {e}") from None
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"corrupt image: {e}") from None   # how PIL reports truncation/corruption


def _bilinear():
    from PIL import Image

    return Image.BILINEAR


def _encode_png(img) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()
