"""One nightly run at a time: a lock object beside the models, with an expiry kept fresh by a
heartbeat, so a crashed run's lock goes stale and the next run takes it over.

On S3 the lock is created with a conditional PUT (If-None-Match: *) and refreshed or taken over
only with If-Match on the ETag last seen, so two runs can never both believe they hold it
(S3 has supported both since 2024; so do MinIO and moto). On a local root the same is done with
O_EXCL creation and an atomic rename.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from pipeline.dataset.storage import Storage, StorageError, is_s3, split_s3


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
        self.token = None          # S3 ETag (or local nonce) of the lock as we last wrote it
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

    # -- S3 or local primitives ----------------------------------------------------------------
    def _create(self) -> bool:
        body, data = self._payload()
        if is_s3(self.url):
            return self._written(body, self._s3_put(data, IfNoneMatch="*"))
        os.makedirs(os.path.dirname(self.url), exist_ok=True)
        try:
            fd = os.open(self.url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.token = body["nonce"]
        return self._written(body, True)

    def _written(self, body: dict, ok: bool) -> bool:
        if ok:
            self.body = body
        return ok

    def _replace(self, token) -> bool:
        """Overwrite the lock only if it is still the version we saw (compare and swap)."""
        if is_s3(self.url):
            body, data = self._payload()
            condition = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
            return self._written(body, self._s3_put(data, **condition))
        moved = f"{self.url}.{uuid.uuid4().hex}"
        try:
            os.rename(self.url, moved)            # atomic: exactly one contender wins it
        except FileNotFoundError:
            return self._create()
        with open(moved, "rb") as f:
            seen = json.loads(f.read() or b"{}").get("nonce")
        if token is not None and seen != token:   # someone replaced it since we looked
            os.rename(moved, self.url)
            return False
        os.remove(moved)
        return self._create()

    def _read(self):
        token = None
        try:
            if is_s3(self.url):
                bucket, key = split_s3(self.url)
                response = self.storage._call("read", self.url, self.storage.s3.get_object,
                                              Bucket=bucket, Key=key)
                text = response["Body"].read()
                token = response["ETag"]
            else:
                with open(self.url, "rb") as f:
                    text = f.read()
                token = None
            body = json.loads(text)
            return body, token if is_s3(self.url) else body.get("nonce")
        except FileNotFoundError:
            return None, None
        except ValueError:                        # torn or foreign content: treat as stale
            return {}, token

    def _delete(self, token) -> None:
        if is_s3(self.url):
            bucket, key = split_s3(self.url)
            try:
                self.storage._call("delete", self.url, self.storage.s3.delete_object,
                                   Bucket=bucket, Key=key, IfMatch=token)
            except (StorageError, FileNotFoundError):
                pass                              # taken over meanwhile: not ours to delete
        else:
            try:
                os.remove(self.url)
            except FileNotFoundError:
                pass

    def _s3_put(self, data: bytes, **condition) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(self.url)
        try:
            response = self.storage.s3.put_object(Bucket=bucket, Key=key, Body=data, **condition)
        except BotoCoreError as e:                  # connection refused/reset after retries
            raise StorageError(f"write lock {self.url}: {e}") from None
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise StorageError(f"write lock {self.url}: {code or e}") from None
        self.token = response["ETag"]
        return True
