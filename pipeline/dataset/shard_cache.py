"""One process's local copies of shard files, fetched ahead of the reader within a byte budget.

A reader names the order it will read shards in (`want`), then opens them one after another
(`open` waits until the file is local, `release` when it has read it). Background threads fetch
the wanted shards in that order while space allows, each checked against the manifest's sha256.
Space comes from released files, least recently released first; a file being read or fetched
for a reader is never removed. So training starts once its first shard is local, later shards
arrive while earlier ones are read, and the files on disk never exceed the budget. A share that
fits is fetched once and kept, as full staging would.

No TensorFlow here: the trainer's input and load.py wrap `paths()` in tf.data."""
from __future__ import annotations

import collections
import os
import re
import threading
import weakref

from pipeline.dataset.local_files import file_digest, own_folder
from pipeline.dataset.local_paths import UnsafeName, path_under
from pipeline.dataset.manifest import Shard
from pipeline.dataset.storage import Storage, join

# Fetches in flight ahead of the reader. More share the bandwidth (and, against a local S3
# server, its CPU) with the file the reader waits for (benchmarks/trainer_photos).
FETCH_AHEAD = 2


class ShardChecksumError(Exception):
    """A shard's bytes differ from the sha256 the manifest lists."""


class CacheTooSmall(Exception):
    """A shard is larger than the whole budget."""


SHA256 = re.compile(r"[0-9a-f]{64}")


def local_name(shard: Shard, keep_folders: bool = False) -> str:
    """The local file name of a shard: its sha256's first 16 digits and its file name (with
    the manifest's folders when `keep_folders`). The manifest is the bucket's, so a sha256 that
    is not 64 hex digits (it could hold `../`) is refused here, and the name by `path_under`."""
    if not SHA256.fullmatch(str(shard.sha256)):
        raise UnsafeName(f"the manifest gives shard {shard.file!r} the sha256 {shard.sha256!r}: "
                         "not 64 hex digits")
    return f"{shard.sha256[:16]}-{shard.file if keep_folders else os.path.basename(shard.file)}"


def check_room(splits: dict[str, list[Shard]], limit_bytes: float) -> None:
    """Refuse (CacheTooSmall) a budget under which a reader could wait for room forever. One
    cache serves every split of a process, and each split's reader holds one shard open at once
    (training's stays suspended, its shard open, while validation reads): so the largest shard
    of every split must fit together. Every shard's local name is checked too (the manifest is
    the bucket's), before anything is fetched."""
    largest = {name: max(shards, key=lambda s: s.bytes) for name, shards in splits.items() if shards}
    for shards in splits.values():
        for shard in shards:
            local_name(shard)
    need = sum(s.bytes for s in largest.values())
    if need > limit_bytes:
        each = ", ".join(f"{name} {s.file} {s.bytes / 2**20:.2f} MiB" for name, s in largest.items())
        raise CacheTooSmall(f"--cache-limit-gb {limit_bytes / 2**30:g} is smaller than the largest shard of "
                            f"each split together ({need / 2**20:.2f} MiB: {each}): each process "
                            "holds one of each open at once")


class ShardCache:
    def __init__(self, storage: Storage, dataset_url: str, local_dir: str, limit_bytes: float,
                 on_event=None):
        self.storage, self.dataset_url, self.local_dir = storage, dataset_url, local_dir
        self.limit = limit_bytes
        self.on_event = on_event or (lambda *event: None)     # ("fetched" | "evicted", file): tests
        self.lock = threading.Condition()
        self.local: dict[str, Shard] = {}        # fetched and checked
        self.fetching: dict[str, Shard] = {}
        self.pinned: collections.Counter = collections.Counter()    # open by a reader
        self.released: collections.OrderedDict = collections.OrderedDict()   # evictable, oldest first
        self.queue: list[Shard] = []             # wanted, in reading order, not yet fetched
        self.errors: dict[str, Exception] = {}
        self.holding: dict = {}                  # reader key -> (its token, the shard it reads)
        self.wanted: dict[str, int] = {}         # the latest reading order: file -> position
        # Owned while this cache lives: a second cache on the folder (another load() with the same
        # cache_dir, another job with the same --checkpoint-dir) is refused, never emptied under
        # us; what a crashed owner left is removed.
        owner = own_folder(local_dir)
        self.close = weakref.finalize(self, os.close, owner)

    def path(self, shard: Shard) -> str:
        return path_under(self.local_dir, local_name(shard))

    @property
    def bytes_on_disk(self) -> int:
        return sum(s.bytes for s in self.local.values()) + sum(s.bytes for s in self.fetching.values())

    def want(self, shards: list[Shard]) -> None:
        """The shards a reader is about to read, in order: fetched ahead, as space allows."""
        for shard in shards:
            self.path(shard)            # a name that would leave the folder: refused before any fetch
            if shard.bytes > self.limit:
                raise CacheTooSmall(f"shard {shard.file} is {shard.bytes / 2**30:.2f} GiB, more than the "
                                    f"cache limit of {self.limit / 2**30:.2f} GiB (--cache-limit-gb)")
        rank = {s.file: i for i, s in enumerate(shards)}
        with self.lock:
            self.wanted = rank
            # Files fetched ahead for an earlier order become evictable: the unwanted first, then
            # the wanted, those needed last first.
            idle = [(file, shard) for file, shard in self.local.items() if file not in self.pinned]
            for file, shard in sorted(idle, key=lambda item: -rank.get(item[0], len(shards))):
                self.released.pop(file, None)
                self.released[file] = shard
            self.queue = [s for s in shards if s.file not in self.local and s.file not in self.fetching]
            self.schedule()

    def open(self, shard: Shard) -> str:
        """The local path of `shard`, fetched first if need be; pinned until `release`."""
        with self.lock:
            self.pinned[shard.file] += 1
            self.released.pop(shard.file, None)
            while shard.file not in self.local:
                if shard.file in self.errors:
                    self.pinned[shard.file] -= 1
                    raise self.errors.pop(shard.file)
                if shard.file not in self.fetching and self.make_room(shard.bytes, urgent=True):
                    self.start(shard)
                self.lock.wait(1.0)
            return self.path(shard)

    def release(self, shard: Shard) -> None:
        with self.lock:
            self.pinned[shard.file] -= 1
            if self.pinned[shard.file] <= 0:
                del self.pinned[shard.file]
                self.released[shard.file] = shard
            self.schedule()

    def schedule(self) -> None:
        """Start fetching queued shards while they fit (caller holds the lock)."""
        while self.queue and len(self.fetching) < FETCH_AHEAD:
            shard = self.queue[0]
            if shard.file in self.local or shard.file in self.fetching:
                self.queue.pop(0)
                continue
            if not self.make_room(shard.bytes):
                return
            self.queue.pop(0)
            self.start(shard)

    def start(self, shard: Shard) -> None:
        """Fetch in a daemon thread: a process that has read what it needs exits without waiting
        for the fetches still ahead of it."""
        self.fetching[shard.file] = shard
        threading.Thread(target=self.fetch, args=(shard,), name=f"fetch {shard.file}", daemon=True).start()

    def make_room(self, needed: int, urgent: bool = False) -> bool:
        """Remove files until `needed` more bytes fit: read ones, least recently first; for a file
        a reader waits for (`urgent`), also those fetched ahead, needed last first."""
        while self.bytes_on_disk + needed > self.limit:
            if self.released:
                file, shard = self.released.popitem(last=False)
            elif urgent and (ahead := [f for f in self.local if f not in self.pinned]):
                file = max(ahead, key=lambda f: self.wanted.get(f, len(self.wanted)))
                shard = self.local[file]
            else:
                return False
            self.queue = [s for s in self.queue if s.file != file] + ([shard] if file in self.wanted else [])
            del self.local[file]
            os.remove(self.path(shard))
            self.on_event("evicted", file)
        return True

    def fetch(self, shard: Shard) -> None:
        path, url = self.path(shard), join(self.dataset_url, shard.file)
        incoming = f"{path}.incoming"
        try:
            self.storage.download(url, incoming)
            if file_digest(incoming)[0] != shard.sha256:
                raise ShardChecksumError(f"{url}: sha256 differs from the manifest (corrupt or replaced)")
            os.replace(incoming, path)
        except Exception as e:           # handed to the reader that opens it, as one line there
            if os.path.exists(incoming):
                os.remove(incoming)
            with self.lock:
                del self.fetching[shard.file]
                self.errors[shard.file] = e
                self.lock.notify_all()
            return
        with self.lock:
            del self.fetching[shard.file]
            self.local[shard.file] = shard
            if shard.file not in self.pinned:      # fetched ahead: kept for its reader
                self.released.pop(shard.file, None)
            self.on_event("fetched", shard.file)
            self.lock.notify_all()

    def paths(self, shards: list[Shard], reader=None):
        """Local paths of `shards` in order, each released when the next is asked for (a reader
        that reads one file after another, as tf.data's flat_map does). A new reader under the
        same `reader` key ends the previous one: tf.data leaves a reader suspended, its file
        still open, when a take() stops early (each epoch does), and may finalise it late.
        Removing a file that such a reader still holds open is safe on POSIX."""
        key, token = reader if reader is not None else object(), object()
        self.drop(key)
        self.want(shards)
        try:
            for shard in shards:
                self.drop(key, token)
                path = self.open(shard)
                with self.lock:
                    self.holding[key] = (token, shard)
                yield path
        finally:
            self.drop(key, token)

    def drop(self, key, token=None) -> None:
        """Release the file the reader `key` holds (only if it is still the `token` one's)."""
        with self.lock:
            held = self.holding.get(key)
            if held is None or (token is not None and held[0] is not token):
                return
            del self.holding[key]
        self.release(held[1])
