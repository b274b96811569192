"""Progress of a running job on any runner: each shard writer keeps a small counter object in
the run's staging folder (<staging>/progress/<writer id>.json, rewritten at most every few
seconds and after each shard), the job notes each split's count of images to read there once
it is known (<staging>/progress/total-<split>.json: after the rows are listed and checked, before
the first shard is written), and the launcher sums them into one line every 10 s: images read of
the total, the current rate, the percentage and the time left
(pipeline/dataset/progress_line.py). The counters go where the shards go, so the launcher sees
them whether the workers are local processes or a cluster's; the staging folder (with them) is
deleted after publishing.

Not the runner's metrics: Beam's local job service reports a job's metrics only once the job has
ended (LocalJobServicer.GetJobMetrics reads the finished result), the DirectRunner's are in the
launcher's memory only, and each cluster runner has its own API. The files work on all of them
(checked on the portable runner: tests/test_beam_portable.py)."""
from __future__ import annotations

import json
import posixpath
import threading
import time
import uuid

from pipeline.dataset.naming import PROGRESS_FOLDER, is_progress_file, progress_file
from pipeline.dataset.progress_line import Meter
from pipeline.dataset.storage import Storage, join

WRITE_EVERY = 5.0       # seconds between a writer's counter updates (plus one after each shard)


class Counter:
    """A shard writer's running totals, written to its own object in staging."""

    def __init__(self, storage: Storage, staging_url: str):
        self.storage = storage
        self.url = join(staging_url, progress_file(uuid.uuid4().hex))
        self.read = self.quarantined = self.shards = 0
        self.written_at = time.monotonic()

    def add(self, read: int = 0, quarantined: int = 0, shards: int = 0) -> None:
        self.read, self.quarantined = self.read + read, self.quarantined + quarantined
        self.shards += shards
        if shards or time.monotonic() - self.written_at >= WRITE_EVERY:
            self.storage.write_text(self.url, json.dumps(
                {"read": self.read, "quarantined": self.quarantined, "shards": self.shards}))
            self.written_at = time.monotonic()


def note_total(split_size, storage: Storage, staging_url: str) -> None:
    """(split, (records, bytes)) -> nothing: the split's images to read, as a counter object of
    its own (the progress line's total)."""
    split, (records, _) = split_size
    storage.write_text(join(staging_url, progress_file(f"total-{split}")), json.dumps({"total": records}))


def totals(storage: Storage, staging_url: str) -> dict:
    """The sums of every writer's counters so far, and the images to read ("total": 0 until
    the job has counted them)."""
    summed = {"read": 0, "quarantined": 0, "shards": 0, "total": 0}
    for url, _ in storage.list(join(staging_url, PROGRESS_FOLDER)):
        if not is_progress_file(posixpath.basename(url)):
            continue                # a counter being rewritten beside itself: counted once, as itself
        try:
            counts = json.loads(storage.read_text(url))
        except (FileNotFoundError, ValueError):   # being rewritten right now: next time
            continue
        for key in summed:
            summed[key] += counts.get(key, 0)
    return summed


def line(counts: dict, meter: Meter) -> str:
    """The progress line of `counts` (totals()), `meter` updated with them."""
    meter.update(counts["read"], counts["total"] or None)
    if not counts["read"]:
        extra = ("rows counted, being grouped by shard" if counts["total"] else
                 "workers starting: rows being listed and checked")
    else:
        extra = f"{counts['quarantined']:,} quarantined, {counts['shards']:,} shards written"
    return meter.progress("ingest:", "images read", extra=f"{extra}, {meter.seconds:.0f} s").line()


class Watcher:
    """In the launcher: every `every` seconds, one progress line through `say` (the rate is the
    last 30 s's), and a last one when the workers are done."""

    def __init__(self, storage: Storage, staging_url: str, say, every: float = 10.0):
        self.storage, self.staging_url, self.say, self.every = storage, staging_url, say, every
        self.stopped = threading.Event()
        self.meter = Meter(window=max(30.0, 3 * every))
        self.thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self.stopped.set()
        self.thread.join(timeout=self.every)
        if exc_type is None:
            self._show()              # where the workers ended: every image read, of the total

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            self._show()

    def _show(self) -> None:
        try:
            counts = totals(self.storage, self.staging_url)
        except Exception:   # a progress line is not worth failing or slowing the job for
            return
        self.say(line(counts, self.meter))
