"""Validate encoded image bytes before they may enter a shard."""
from __future__ import annotations

import dataclasses
import io

CHANNELS_BY_MODE = {"1": 1, "L": 1, "I;16": 1, "LA": 2, "P": 3, "RGB": 3, "RGBA": 4, "CMYK": 3}
FORMATS = {"PNG": "png", "JPEG": "jpeg"}
DEFAULT_MAX_PIXELS = 50_000_000


class BadImage(Exception):
    """The bytes are not a usable image; str(e) is the quarantine reason."""


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    format: str
    height: int
    width: int
    channels: int


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Fully decode the image (a truncated file fails here, not in the trainer) and describe it."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("empty object (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = FORMATS.get(img.format or "")
            if fmt is None:
                raise BadImage(f"unsupported image format {img.format}")
            width, height = img.size
            if width * height > max_pixels:   # checked before decoding: decompression bombs
                raise BadImage(f"too many pixels: {width}x{height} > {max_pixels}")
            img.load()
            channels = CHANNELS_BY_MODE.get(img.mode)
            if channels is None:
                raise BadImage(f"unsupported pixel mode {img.mode}")
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised bytes)") from None
    except BadImage:
        raise
    except (OSError, ValueError, SyntaxError) as e:  # PIL reports truncation/corruption this way
        raise BadImage(f"corrupt image: {e}") from None
    return ImageInfo(format=fmt, height=height, width=width, channels=channels)
