"""One holder at a time for a folder of a store: a lease object in it, with an expiry kept fresh
by a heartbeat, so a crashed holder's lease goes stale and the next one takes it over.

The lease is created with a create-only write and refreshed, taken over or deleted only if it
still has the token last seen (Storage's conditional writes and deletes: If-None-Match/If-Match
on S3, an flock'd compare of the content on a local root), so two holders can never both believe
they hold it. A holder on this host whose process is gone (same boot, same pid namespace, no such
pid) is stale at once: a crashed run is resumed on its host without waiting out the expiry.

Used by the nightly (one run at a time) and the trainer (one run per --checkpoint-dir)."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from pipeline.dataset.storage import Storage, StorageError, WriteConflict

__all__ = ["Lease", "LeaseHeld", "LeaseLost"]


class LeaseHeld(Exception):
    """Another holder has a fresh lease; the message says who and since when."""


class LeaseLost(Exception):
    """Our lease was taken over (we stalled past its expiry): stop before the next commit."""


def describe(body: dict) -> str:
    return (f"run {body.get('run_id')} (host {body.get('host')}, pid {body.get('pid')}) "
            f"since {body.get('started')}")


def _read_first_line(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return None


def this_process() -> dict:
    """Who holds a lease: enough to tell, on the same host, whether that process still lives."""
    pid_namespace = None
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_namespace": pid_namespace,
            "boot_id": _read_first_line("/proc/sys/kernel/random/boot_id")}


def holder_is_gone(body: dict) -> bool:
    """True only when the holder provably ran here (host, boot and pid namespace are ours) and
    its pid is gone; anything else (another host, a pod, a pid reused) waits for the expiry."""
    me = this_process()
    if not me["boot_id"] or any(body.get(k) != me[k] for k in ("host", "boot_id", "pid_namespace")):
        return False
    try:
        os.kill(int(body.get("pid")), 0)
    except ProcessLookupError:
        return True
    except (OSError, TypeError, ValueError):
        return False
    return False


class Lease:
    kind = "run"                 # what holds one, in messages ("nightly run", "training run")
    prefix = "lease"             # how its log lines start
    lost_suffix = ""             # what losing it means, said after "lost the lock ..."
    held_hint = ""               # what to do instead, said after "another ... holds ..."

    def __init__(self, storage: Storage, url: str, ttl_seconds: float, run_id: str, log=print):
        self.storage, self.url, self.ttl, self.log = storage, url, ttl_seconds, log
        self.body = {"run_id": run_id, **this_process(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.token = None          # Storage's token of the lease as we last wrote it
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
        gone = current is not None and holder_is_gone(current)
        if current is not None and current.get("expires", 0) > time.time() and not gone:
            raise LeaseHeld(f"another {self.kind} holds {self.url}: {describe(current)}, "
                            f"lock fresh for {current['expires'] - time.time():.0f} s more{self.held_hint}")
        stale = ("its process is gone" if gone else
                 f"expired {time.time() - current['expires']:.0f} s ago" if current else "unreadable")
        if not self._replace(token):
            raise LeaseHeld(f"another {self.kind} took over the stale lock {self.url} first")
        self.log(f"{self.prefix}: took over the stale lock of {describe(current or {})} ({stale})")
        self._start_heartbeat()

    def verify(self) -> None:
        """Raise LeaseLost unless the lease is still ours with at least a heartbeat interval of
        it left (renewed now if less), so no one can take it over before the write that follows
        (called right before a commit; the nonce is the fencing token)."""
        with self._mutex:
            current, _ = self._read()
            ours = not self.lost and current is not None and current.get("nonce") == self.body.get("nonce")
            if ours and current.get("expires", 0) - time.time() < self.ttl / 3:
                ours = self._replace(self.token)          # renew now, or learn that it is gone
        if not ours:
            self.lost = True
            raise LeaseLost(f"lost the lock {self.url} (another run took it over){self.lost_suffix}")

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.token is None:                    # never held (acquire refused or not called)
            return
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
        self._thread = threading.Thread(target=self._beat, name=f"lease-heartbeat {self.url}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = max(1.0, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                with self._mutex:
                    replaced = self._replace(self.token)
                if not replaced:
                    self.lost = True
                    self.log(f"{self.prefix}: lock {self.url} was taken over by another run")
                    return
            except Exception as e:   # transient (network, store): the next beat tries again
                self.log(f"{self.prefix}: lock heartbeat failed ({e}); retrying")

    def _payload(self) -> tuple[dict, bytes]:
        """The next lease body; it becomes self.body only once written, so a failed write never
        leaves us believing in a nonce the store does not hold."""
        body = dict(self.body, nonce=uuid.uuid4().hex, expires=time.time() + self.ttl)
        return body, json.dumps(body).encode()

    # -- compare and swap on Storage -----------------------------------------------------------
    def _create(self) -> bool:
        return self._write(if_none_match=True)

    def _replace(self, token) -> bool:
        """Overwrite the lease only if it is still the version we saw (compare and swap); no
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
        """(the lease's body, its token), (None, None) when there is none, ({}, token) when its
        content is torn or foreign (treated as stale)."""
        try:
            data, token = self.storage.read_versioned(self.url)
        except FileNotFoundError:
            return None, None
        try:
            body = json.loads(data)
        except ValueError:
            return {}, token
        return (body if isinstance(body, dict) else {}), token

    def _delete(self, token) -> None:
        try:
            self.storage.delete(self.url, if_match=token)
        except (StorageError, FileNotFoundError):
            pass                              # taken over meanwhile: not ours to delete
