"""Progress of a running job on any runner: each shard writer keeps a small counter object in
the run's staging folder (<staging>/progress/<writer id>.json, rewritten at most every few
seconds and after each shard), and the launcher sums them into one line every 10 s. The
counters go where the shards go, so the launcher sees them whether the workers are local
processes or a cluster's; the staging folder (with them) is deleted after publishing.

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


def totals(storage: Storage, staging_url: str) -> dict:
    """The sums of every writer's counters so far."""
    summed = {"read": 0, "quarantined": 0, "shards": 0}
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


def line(counts: dict, seconds: float, rate: float) -> str:
    if not counts["read"]:
        return (f"no image read yet (workers starting, rows being listed, checked and grouped "
                f"by shard), {seconds:.0f} s")
    return (f"{counts['read']:,} images read ({rate:,.0f} images/s), {counts['quarantined']:,} "
            f"quarantined, {counts['shards']:,} shards written, {seconds:.0f} s")


class Watcher:
    """In the launcher: every `every` seconds, one progress line through `say` (the rate is the
    last interval's)."""

    def __init__(self, storage: Storage, staging_url: str, say, every: float = 10.0):
        self.storage, self.staging_url, self.say, self.every = storage, staging_url, say, every
        self.stopped = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(timeout=self.every)

    def _run(self) -> None:
        before, then = 0, time.monotonic()
        while not self.stopped.wait(self.every):
            try:
                counts = totals(self.storage, self.staging_url)
            except Exception:   # a progress line is not worth failing or slowing the job for
                continue
            now = time.monotonic()
            rate = (counts["read"] - before) / (now - then)       # over the last interval
            before, then = counts["read"], now
            if not self.stopped.is_set():
                self.say(line(counts, now - self.started, rate))
