"""The progress line of every long job (the demo's upload, the ingestion, each training epoch):
the count, the current rate, and with a known total the percentage and the time left; on a
terminal one line updated in place, in a log file, a pipe or CI plain lines.

    upload: 12,000/70,000 images (17 %), 850 images/s, 56 s left
    ingest: 30,211/66,500 images read (45 %), 212 images/s, 2 min 51 s left; 0 quarantined, 40 shards written, 180 s
    epoch 2/6 step 120/469 (25 %), 1,850 images/s, 31 s left; loss 0.4123 acc 0.8512 lr 0.0240

Here, in the package every command may import (the ingestion, the trainer and infra/), so one
object both writes the line and reads it back (`Progress.line`, `parse`): the demo, which shows
its children's output, finds their progress lines by it. No TensorFlow, no Beam."""
from __future__ import annotations

import collections
import dataclasses
import re
import shutil
import threading
import time

__all__ = ["LiveLine", "Meter", "Progress", "duration", "parse"]


@dataclasses.dataclass(frozen=True)
class Progress:
    """One progress line: `what` (with its own punctuation: "upload:", "epoch 2/6 step"),
    `done` of `total` (None: unknown) `unit`, the current `rate` in `rate_unit` per second,
    the time `left` (None: unknown), and `extra` after a semicolon."""
    what: str
    done: int
    unit: str = ""
    total: int | None = None
    rate: float = 0.0
    rate_unit: str = ""
    left: float | None = None
    extra: str = ""

    def line(self) -> str:
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "")
        text = f"{self.what} {count}{f' {self.unit}' if self.unit else ''}"
        if self.total:
            text += f" ({min(100, int(100 * self.done / self.total))} %)"
        text += f", {self.rate:,.0f} {self.rate_unit or (self.unit.split() or ['items'])[0]}/s"
        if self.left is not None and self.total and self.done < self.total:
            text += f", {duration(self.left)} left"
        return text + (f"; {self.extra}" if self.extra else "")


# What Progress.line writes, read back (a rank's prefix, "[0]<stdout>:", is horovodrun's).
LINE = re.compile(r"^(?:\[\d+\]<std(?:out|err)>:)?(?P<what>\S.*?) (?P<done>\d[\d,]*)(?:/(?P<total>\d[\d,]*))?"
                  r"(?: (?P<unit>[a-z][a-z ]*?))?(?: \((?P<percent>\d+) %\))?, (?P<rate>\d[\d,]*) "
                  r"(?P<rate_unit>[a-z]+)/s(?:, (?P<left>[\w ]+?) left)?(?:; (?P<extra>.*))?$")


def parse(line: str) -> Progress | None:
    """The Progress a line shows, or None for any other line (the time left is not read back)."""
    found = LINE.match(line.rstrip("\n"))
    if not found:
        return None
    number = lambda text: int(text.replace(",", "")) if text else None      # noqa: E731
    return Progress(found["what"], number(found["done"]), found["unit"] or "", number(found["total"]),
                    float(number(found["rate"])), found["rate_unit"], None, found["extra"] or "")


def duration(seconds: float) -> str:
    """45 s, 3 min 20 s, 2 h 05 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Meter:
    """A count toward an optional total: the rate over the last `window` seconds (not since the
    start, which a slow start would drag down for the whole run) and the time left at that rate."""

    def __init__(self, total: int | None = None, window: float = 30.0, clock=time.monotonic, start: int = 0):
        self.total, self.window, self.clock = total, window, clock
        self.started = clock()
        self.samples = collections.deque([(self.started, start)])     # `start`: done before now

    def update(self, done: int, total: int | None = None) -> None:
        now = self.clock()
        self.total = total if total is not None else self.total
        self.samples.append((now, done))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()         # keep one sample at or before the window's start

    @property
    def done(self) -> int:
        return self.samples[-1][1]

    @property
    def rate(self) -> float:
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def left(self) -> float | None:
        if not self.total or self.rate <= 0:
            return None
        return max(0, self.total - self.done) / self.rate

    @property
    def seconds(self) -> float:
        return self.clock() - self.started

    def progress(self, what: str, unit: str, rate_unit: str = "", extra: str = "") -> Progress:
        return Progress(what, self.done, unit, self.total, self.rate, rate_unit, self.left, extra)


class LiveLine:
    """A text stream (stderr, say) that also shows progress lines: on a terminal the latest one
    stays at the bottom and is rewritten in place, and other text is written above it; elsewhere
    (a file, a pipe, CI) each progress line is written as a plain line, at most one every `every`
    seconds and the one that reaches its total. Usable as a logging handler's stream or print's
    file."""

    def __init__(self, stream, every: float = 0.0, tty: bool | None = None, clock=time.monotonic):
        self.stream, self.every, self.clock = stream, every, clock
        self.tty = tty if tty is not None else _isatty(stream)
        self.shown = ""                 # the progress line on the screen now (terminal only)
        self.midline = False            # text written without its newline yet
        self.last = None                # when the last plain progress line was written
        self.lock = threading.RLock()   # lines come from several threads (uploads, logging)

    def progress(self, line: str) -> None:
        with self.lock:
            self._progress(line)

    def _progress(self, line: str) -> None:
        if not self.tty:
            now, shown = self.clock(), parse(line)
            complete = shown is not None and shown.total is not None and shown.done >= shown.total
            if self.last is None or now - self.last >= self.every or complete:    # the last one too
                self.stream.write(line.rstrip("\n") + "\n")
                self.stream.flush()
                self.last = now
            return
        self.shown = line.rstrip("\n")
        if not self.midline:
            self._draw()

    def write(self, text: str) -> int:
        with self.lock:
            return self._write(text)

    def _write(self, text: str) -> int:
        if self.tty and self.shown and not self.midline:
            self.stream.write("\r\x1b[K")          # the progress line off, the text in its place
        self.stream.write(text)
        if text:
            self.midline = not text.endswith("\n")
        if self.tty and self.shown and not self.midline:
            self._draw()                           # and the progress line back below it
        return len(text)

    def end(self) -> None:
        """Leave the last progress line on the screen as an ordinary line; stop redrawing it."""
        with self.lock:
            if self.tty and self.shown and not self.midline:
                self.stream.write("\n")
            self.shown = ""
            self.flush()

    def clear(self) -> None:
        """Take the progress line off the screen (the next line says how it ended)."""
        with self.lock:
            if self.tty and self.shown and not self.midline:
                self.stream.write("\r\x1b[K")
            self.shown = ""
            self.flush()

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.tty

    def fileno(self) -> int:
        return self.stream.fileno()

    def close(self) -> None:
        self.end()
        self.stream.close()

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 24)).columns - 1    # a wrapped line cannot be redrawn
        self.stream.write("\r" + self.shown[:width] + "\x1b[K")
        self.stream.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
