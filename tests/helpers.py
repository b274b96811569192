"""Small image builders for tests."""
import io

import numpy as np
from PIL import Image


def png(height=28, width=28, channels=1, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, channels), np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(height=28, width=28) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()
