"""One nightly run at a time: a lock object beside the models, with an expiry kept fresh by a
heartbeat, so a crashed run's lock goes stale and the next run takes it over.

The lock is created with a create-only write and refreshed, taken over or deleted only if it
still has the token last seen (Storage's conditional writes and deletes: If-None-Match/If-Match
on S3, an flock'd compare of the content on a local root), so two runs can never both believe
they hold it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from pipeline.dataset.storage import Storage, StorageError, WriteConflict


class LockHeld(Exception):
    """Another run holds a fresh lock; the message says who and since when."""


class LockLost(Exception):
    """Our lock was taken over (we stalled past its expiry): stop before promoting anything."""


def describe(body: dict) -> str:
    return (f"run {body.get('run_id')} (host {body.get('host')}, pid {body.get('pid')}) "
            f"since {body.get('started')}")


class NightlyLock:
    def __init__(self, storage: Storage, url: str, ttl_seconds: int, run_id: str, log=print):
        self.storage, self.url, self.ttl, self.log = storage, url, ttl_seconds, log
        self.body = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.token = None          # Storage's token of the lock as we last wrote it
        self.lost = False
        self._stop = threading.Event()
        self._thread = None
        self._mutex = threading.Lock()     # heartbeat and verify() must not interleave

    # -- the protocol ----------------------------------------------------------------------------
    def acquire(self) -> None:
        if self._create():
            self._start_heartbeat()
            return
        current, token = self._read()
        if current is None:                       # released between our two calls: try once more
            if self._create():
                self._start_heartbeat()
                return
            current, token = self._read()
        if current is not None and current.get("expires", 0) > time.time():
            raise LockHeld(f"another nightly run holds {self.url}: {describe(current)}, "
                           f"lock fresh for {current['expires'] - time.time():.0f} s more")
        stale = f"{time.time() - current['expires']:.0f} s ago" if current else "unreadable"
        if not self._replace(token):
            raise LockHeld(f"another nightly run took over the stale lock {self.url} first")
        self.log(f"nightly: took over the stale lock of {describe(current or {})} (expired {stale})")
        self._start_heartbeat()

    def verify(self) -> None:
        """Raise LockLost unless the lock is still ours with at least a heartbeat interval of
        its lease left (renewed now if less), so no one can take it over before the write that
        follows (called right before the pointer is written; the nonce is the fencing token)."""
        with self._mutex:
            current, _ = self._read()
            ours = not self.lost and current is not None and current.get("nonce") == self.body.get("nonce")
            if ours and current.get("expires", 0) - time.time() < self.ttl / 3:
                ours = self._replace(self.token)          # renew now, or learn that it is gone
        if not ours:
            self.lost = True
            raise LockLost(f"lost the lock {self.url} (another run took it over); nothing promoted")

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        current, token = self._read()
        if current is not None and current.get("nonce") == self.body.get("nonce"):
            self._delete(token)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    # -- heartbeat -------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="nightly-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = max(1.0, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                with self._mutex:
                    replaced = self._replace(self.token)
                if not replaced:
                    self.lost = True
                    self.log(f"nightly: lock {self.url} was taken over by another run")
                    return
            except Exception as e:   # transient (network, store): the next beat tries again
                self.log(f"nightly: lock heartbeat failed ({e}); retrying")

    def _payload(self) -> tuple[dict, bytes]:
        """The next lock body; it becomes self.body only once written, so a failed write never
        leaves us believing in a nonce the store does not hold."""
        body = dict(self.body, nonce=uuid.uuid4().hex, expires=time.time() + self.ttl)
        return body, json.dumps(body).encode()

    # -- compare and swap on Storage -----------------------------------------------------------
    def _create(self) -> bool:
        return self._write(if_none_match=True)

    def _replace(self, token) -> bool:
        """Overwrite the lock only if it is still the version we saw (compare and swap); no
        token (nothing was there): only if nothing is there still."""
        return self._write(if_match=token) if token else self._write(if_none_match=True)

    def _write(self, **condition) -> bool:
        body, data = self._payload()
        try:
            self.token = self.storage.write_bytes(self.url, data, **condition)
        except WriteConflict:
            return False
        self.body = body
        return True

    def _read(self):
        """(the lock's body, its token), (None, None) when there is none, ({}, token) when its
        content is torn or foreign (treated as stale)."""
        try:
            data, token = self.storage.read_versioned(self.url)
        except FileNotFoundError:
            return None, None
        try:
            return json.loads(data), token
        except ValueError:
            return {}, token

    def _delete(self, token) -> None:
        try:
            self.storage.delete(self.url, if_match=token)
        except (StorageError, FileNotFoundError):
            pass                              # taken over meanwhile: not ours to delete
