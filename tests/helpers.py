"""Small image builders for tests, and finding the processes of a horovodrun."""
import io
import os

import numpy as np
from PIL import Image

from pipeline.images import DEFAULT_MAX_PIXELS, ImageInfo, prepare_image


def png(height=28, width=28, channels=1, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, channels), np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """What the job's full decode check makes of these bytes (format, size, channels)."""
    return prepare_image(data, max_pixels).info


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


def kill_rank_when(command: list[str], checkpoints: str, ready, rank: int = 1,
                   wait: float = 120) -> tuple[int, str]:
    """Start `command` (a horovodrun), kill -9 the process of `rank` as soon as `ready(lines)`,
    then wait up to `wait` s for the run to end. Returns (exit code, its output)."""
    returncode, output, _ = kill_when(command, ready, lambda: rank_pid(checkpoints, rank), f"rank {rank}", wait)
    return returncode, output


def kill_when(command: list[str], ready, victim, name: str, wait: float = 120) -> tuple[int, str, float]:
    """Start `command` (a horovodrun), kill -9 the process `victim()` finds (called `name` in
    failures) as soon as `ready(lines)`, then wait up to `wait` s for the run to end. Returns
    (exit code, its output, seconds from the kill to the end)."""
    import signal
    import subprocess
    import threading
    import time

    from tests.conftest import ROOT

    run = subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not ready(lines):
        assert run.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.05)
    pid = victim()
    assert pid, f"{name} not found"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        run.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        raise AssertionError(f"horovodrun still running {wait:.0f} s after {name} was killed")
    reader.join(10)
    return run.returncode, "".join(lines), time.monotonic() - killed
