"""Small image builders for tests, and finding the processes of a horovodrun."""
import io
import os

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


def png_header_only(height: int, width: int) -> bytes:
    """A PNG that claims huge dimensions and holds no pixels: a decompression-bomb probe."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def rank_pid(checkpoints: str, rank: int) -> int | None:
    """The live trainer process of this run that horovodrun started as the given rank."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if checkpoints.encode() in cmdline and b"trainer" in cmdline and \
                f"HOROVOD_RANK={rank}".encode() in environ and b"horovodrun" not in cmdline:
            return int(entry)
    return None
