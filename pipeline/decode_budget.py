"""How many images a worker process decodes at once: as many as fit in its memory budget
(--worker_memory_gb), each counted at what decoding it may cost.

Reading an image's header is free (Pillow opens lazily), and the header says how many pixels the
decode will make; so before the pixels exist, the decode waits until the process's other decodes
leave room for it. The budget is per process, shared by every WriteShard instance and fetch
thread in it (a Beam worker runs bundles on several threads), so the decoded pixels a worker holds
never exceed it, whatever --fetch_threads is: 16 threads decoding 7000x7000 RGBA PNGs at once
would have needed ~33 GB (issue 26)."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading

# Bytes one pixel may cost while it is prepared (pipeline/images.py), measured as the peak RSS
# of prepare_image over the pixels of a 7000x7000 image (Pillow 12.3): RGBA PNG kept 4.0, converted
# to RGB or grey (--channels) 10.3, resized to 2000x2000 9.5, baseline JPEG 4.1, progressive 7.1,
# CMYK 8.1, 16-bit grey 6.0 (7.1 to RGB); before issue 26 the RGBA PNG took 44 and its
# conversion 92. tests/test_ingest_memory.py checks a peak stays below it.
BYTES_PER_PIXEL = 12
DEFAULT_WORKER_MEMORY_GB = 4.0


def decode_cost(size: tuple[int, int], resize: tuple[int, int] | None, encoded_bytes: int) -> int:
    """Bytes one image may hold while it is decoded, converted, resized and summed: its pixels
    (as stored and, when resized, the larger of the two sizes) at BYTES_PER_PIXEL, plus its
    encoded bytes."""
    width, height = size
    pixels = max(width * height, resize[0] * resize[1] if resize else 0)
    return pixels * BYTES_PER_PIXEL + encoded_bytes


class DecodeBudget:
    """Bytes of decoding in flight in this process, at most `limit`. An image that costs more
    than the whole budget waits until nothing else is decoding, then runs alone (so the budget
    is never deadlocked, and the plan refuses a budget below the cost of --max_pixels)."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def holding(self, cost: int):
        cost = min(cost, self.limit)
        with self.changed:
            self.changed.wait_for(lambda: self.held + cost <= self.limit)
            self.held += cost
        try:
            yield
        finally:
            with self.changed:
                self.held -= cost
                self.changed.notify_all()


UNBOUNDED = DecodeBudget(2**62)
_SHARED: dict[int, DecodeBudget] = {}
_SHARED_LOCK = threading.Lock()


M_MMAP_THRESHOLD = -3            # glibc's mallopt parameter
MMAP_FROM = 4 * 2**20


def shared(limit: int) -> DecodeBudget:
    """This process's budget of `limit` bytes: one object for every caller in the process."""
    with _SHARED_LOCK:
        if not _SHARED:
            return_large_blocks()
        return _SHARED.setdefault(limit, DecodeBudget(limit))


def return_large_blocks() -> None:
    """Have glibc give blocks of 4 MiB and more back to the system when they are freed. By
    default its threshold for that rises after the first large free, and each thread's arena then
    keeps what its decodes freed: four threads decoding one image at a time still held four
    images' worth (measured: 1.47 GB for four 7000x7000 conversions in turn, 0.5 GB each).
    Pillow allocates images in blocks of 16 MiB, so every image goes back when it is freed."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).mallopt(M_MMAP_THRESHOLD, MMAP_FROM)
    except (OSError, AttributeError, TypeError):      # not glibc: its own policy stands
        pass


def worst_case(max_pixels: int) -> int:
    """What one image under --max_pixels may cost (no --resize): the least budget that works."""
    return decode_cost((max_pixels, 1), None, 0)
