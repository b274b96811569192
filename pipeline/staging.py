"""What a run leaves beside an output before its commit, and when the next run may remove it.

Each run's workers write into `<output>/.staging-<run id>/`; a publish moves those files into
`<output>/v-<id>/` and only then commits. A run killed on the way leaves both behind. To tell a
dead run's leftovers from a live run's work, each run holds a lease in its staging folder
(LEASE.json: until when it is alive), renewed every LEASE_SECONDS / 4 while the launcher runs.

The next run into the same output then sorts what it finds (`Leftovers`):
- a staging folder whose lease has expired, or with no objects left under it (a real store
  may keep listing an emptied folder for a while), is dead: removed;
- a version folder never committed is removed too once no live lease is there: it was being
  placed by a run that is dead (a run of the same input would rebuild it from its own staging);
- a live lease means another run writes here now: named, never touched;
- a staging folder from before leases (no LEASE.json, not empty): named, never touched.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath
import socket
import threading
import time

from pipeline import versions
from pipeline.dataset import naming
from pipeline.dataset.storage import Storage, join
from pipeline.logs import FILE_ONLY

LEASE_SECONDS = 600          # a killed run's leftovers are removed this long after its last renewal
log = logging.getLogger("pipeline")


@dataclasses.dataclass(frozen=True)
class Leftovers:
    dead: list[str]              # staging folders of dead runs, and uncommitted versions when safe
    live: list[str]              # staging folders whose run is alive (lease not expired)
    unknown: list[str]           # staging folders without a lease, from before leases


class Lease:
    """`with Lease(storage, staging_url):` holds the run's lease while the block runs."""

    def __init__(self, storage: Storage, staging_url: str, seconds: float = LEASE_SECONDS):
        self.storage, self.url, self.seconds = storage, join(staging_url, naming.LEASE_NAME), seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="staging-lease", daemon=True)

    def write(self) -> None:
        self.storage.write_text(self.url, json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + self.seconds}))

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                self.write()
            except Exception as e:      # the store may blip: the next renewal tries again
                log.warning("could not renew the staging lease %s: %s", self.url, e)

    def __enter__(self) -> "Lease":
        self.write()
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.storage.delete(self.url)   # after a publish the folder is gone: nothing to do
        except Exception:
            if exc_type is None:
                raise
            # The run failed already, maybe because the store did: that error is the one to report;
            # the lease left behind expires and the next run removes the folder.
            log.warning("could not remove the staging lease %s", self.url, exc_info=True, extra=FILE_ONLY)


def expires(storage: Storage, staging_url: str) -> float | None:
    """When the run of that staging folder stops being alive (None: it has no lease)."""
    try:
        return float(json.loads(storage.read_text(join(staging_url, naming.LEASE_NAME)))["expires"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return 0.0                          # unreadable: a lease nobody renews any more


def is_empty(storage: Storage, url: str) -> bool:
    return next(iter(storage.list(url)), None) is None


def find(storage: Storage, output_url: str, now: float | None = None) -> Leftovers:
    """Sort the staging and uncommitted version folders beside `output_url`."""
    now = time.time() if now is None else now
    dead, live, unknown = [], [], []
    for url in staging_folders(storage, output_url):
        until = expires(storage, url)
        if is_empty(storage, url) or (until is not None and until < now):
            dead.append(url)
        elif until is None:
            unknown.append(url)
        else:
            live.append(url)
    if not live and not unknown:
        dead += [url for url in versions.unfinished(storage, output_url) if not is_empty(storage, url)]
    return Leftovers(dead, live, unknown)


def staging_folders(storage: Storage, output_url: str) -> list[str]:
    try:
        return [url for url, size in storage.list_children(output_url)
                if size is None and naming.is_staging_folder(posixpath.basename(url))]
    except (FileNotFoundError, NotADirectoryError):   # no output yet (or a file: preflight says so)
        return []


def remove(storage: Storage, leftovers: Leftovers) -> None:
    """Delete the dead runs' folders and name the others, one line each."""
    for url in leftovers.dead:
        storage.delete_prefix(url)
        log.info("removed %s, left by a run that stopped (no live lease)", url)
    for url in leftovers.live:
        log.warning("%s: another run is writing into this output now (its lease is live); "
                    "left alone", url)
    for url in leftovers.unknown:
        log.warning("%s was left by a run from before staging leases; it is not part of any "
                    "dataset (delete it once no other run writes there)", url)
