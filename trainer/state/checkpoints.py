"""Checkpoints that are complete or invisible, on S3 or local disk.

Rank 0 writes the checkpoint locally, takes the sha256 of every local file, uploads them, checks
that the store holds exactly those files and sizes, and only then writes the COMMITTED marker
(the files with their sha256, and the training position: global step, epoch, batches done in
that epoch). Checkpoints are named by global step (ckpt-00000468). Readers consider a checkpoint
only if its marker exists, so a crash during upload leaves the previous one as the newest
complete one. Upload and commit run in a background thread while training goes on (at most
one in flight).

One run at a time writes a checkpoint folder: rank 0 holds a lease on it (<dir>/LOCK, the
contract's lease: pipeline/dataset/lease.py), and a second run with the same folder is refused
in one line until the first ends or its lease expires; each commit checks first that the lease
is still ours. The marker records the dataset's version, so a resume onto a dataset republished
since is named and refused unless asked for (--resume-other-version).

On resume, rank 0 checks the newest committed checkpoint against its marker (every file there,
every sha256 right) before choosing it; a damaged one is named in one line and the previous
committed one is tried. The choice is broadcast (train.py), and every rank restores exactly that
checkpoint: a rank whose copy then fails its check stops the job (horovodrun ends the others)
rather than going on from another checkpoint than the rest, and the relaunch decides again.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import tensorflow as tf

from pipeline.dataset.local_files import file_digest
from pipeline.dataset.lease import Lease
from pipeline.dataset.local_paths import UnsafeName, path_under
from pipeline.dataset.storage import Storage, join
from trainer.errors import UsageError

MARKER = "COMMITTED"
NAME = re.compile(r"^ckpt-(\d{5,})$")
LOCK = "LOCK"
# A crashed rank 0 on another host (or in a pod that is gone) keeps the folder for this long; on
# its own host its successor takes over at once (the lease sees that its process is gone).
LEASE_SECONDS = 300


class CheckpointLease(Lease):
    kind = "training run"
    prefix = "trainer"
    held_hint = "; wait for it to end, or use another --checkpoint-dir"
    lost_suffix = "; stopped before committing"


def checkpoint_lease(storage: Storage, checkpoint_dir: str) -> CheckpointLease:
    """Not yet acquired: rank 0 acquires it (train.py) and holds it to the end of the run."""
    return CheckpointLease(storage, join(checkpoint_dir.rstrip("/"), LOCK), LEASE_SECONDS,
                           uuid.uuid4().hex[:12])


class CheckpointStore:
    def __init__(self, storage: Storage, url: str, local_dir: str, keep: int = 3,
                 lease: Lease | None = None):
        self.storage, self.url, self.local_dir, self.keep = storage, url.rstrip("/"), local_dir, keep
        self.lease = lease           # checked before each commit: never commit into a folder we lost
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._checked: set[tuple[int, int]] = set()    # (step, rank) fetched and checked here

    @staticmethod
    def name(step: int) -> str:
        return f"ckpt-{step:08d}"

    def _entries(self) -> dict[int, bool]:
        """step -> committed? for every checkpoint directory found."""
        found: dict[int, bool] = {}
        for url, _ in self.storage.list(self.url):
            parts = url[len(self.url) + 1:].split("/")
            match = NAME.match(parts[0])
            if match and len(parts) == 2:
                step = int(match.group(1))
                found[step] = found.get(step, False) or parts[1] == MARKER
        return found

    def committed(self) -> list[int]:
        return sorted(e for e, done in self._entries().items() if done)

    def latest(self) -> int | None:
        done = self.committed()
        return done[-1] if done else None

    def save(self, checkpoint: tf.train.Checkpoint, step: int, meta: dict) -> str:
        """Write, upload and commit; returns when the checkpoint is committed."""
        self.save_async(checkpoint, step, meta)
        self.wait()
        return join(self.url, self.name(step))

    def save_async(self, checkpoint: tf.train.Checkpoint, step: int, meta: dict, done=None) -> None:
        """Write locally now (training is paused only for this), then upload and commit in the
        background: one commit in flight at most, so a slow store cannot pile up checkpoints.
        `done(url, seconds)` is called once committed; a failed upload is raised by `wait`."""
        self.wait()
        started = time.monotonic()
        local = os.path.join(self.local_dir, self.name(step))
        shutil.rmtree(local, ignore_errors=True)
        checkpoint.write(os.path.join(local, "ckpt"))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-upload")
        self._pending = self._pool.submit(self._commit, step, local, meta, started, done)

    def wait(self) -> None:
        """Block until the commit in flight (if any) is done; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _commit(self, step: int, local: str, meta: dict, started: float, done) -> None:
        name = self.name(step)
        files = [{"name": file_name, "bytes": size, "sha256": digest}       # before any upload
                 for file_name in sorted(os.listdir(local))
                 for digest, size in [file_digest(os.path.join(local, file_name))]]
        self.storage.delete(join(self.url, name, MARKER))   # a step written again: uncommit first
        for f in files:
            self.storage.upload(os.path.join(local, f["name"]), join(self.url, name, f["name"]))
        stored = {url.rsplit("/", 1)[-1]: size for url, size in self.storage.list(join(self.url, name))}
        missing = [f["name"] for f in files if stored.get(f["name"]) != f["bytes"]]
        if missing:
            raise IOError(f"checkpoint {join(self.url, name)}: {', '.join(missing)} not stored as "
                          "written; not committed")
        marker = {"step": step, "files": files, **meta}
        if self.lease is not None:
            self.lease.verify()
        self.storage.write_text(join(self.url, name, MARKER), json.dumps(marker, indent=2))
        shutil.rmtree(local, ignore_errors=True)
        self._prune(step)
        if done:
            done(join(self.url, name), time.monotonic() - started)

    def _prune(self, newest: int) -> None:
        """Keep the newest `keep` committed checkpoints; drop older ones and stale partial ones."""
        entries = self._entries()
        # Counted on this run's line only: newer ones are left by a run this one fell back from.
        keep = set(sorted(e for e, done in entries.items() if done and e <= newest)[-self.keep:])
        for step in entries:
            if step not in keep and step <= newest:
                self.storage.delete_prefix(join(self.url, self.name(step)))

    def marker(self, step: int) -> dict:
        return json.loads(self.storage.read_text(join(self.url, self.name(step), MARKER)))

    def damage(self, step: int, rank: int = 0) -> str | None:
        """Fetch a committed checkpoint's files from the store into this rank's restore folder
        and check them against the marker; None if all are there and intact, else what is
        wrong. (Always from the store: a good local copy must not hide a damaged stored one.)"""
        name, local = self.name(step), self._restore_dir(step, rank)
        try:
            marker = self.marker(step)
        except ValueError:
            return f"its {MARKER} marker is not JSON"
        for f in marker["files"]:
            try:                  # the marker is the bucket's: a name must not leave `local`
                path = path_under(local, f["name"])
            except UnsafeName as e:
                return str(e)
            try:
                self.storage.download(join(self.url, name, f["name"]), path)
            except FileNotFoundError:
                return f"{f['name']} is missing"
            if file_digest(path)[0] != f["sha256"]:
                os.remove(path)
                return f"{f['name']} does not match its sha256 in the {MARKER} marker"
        self._checked.add((step, rank))
        return None

    def restore(self, checkpoint: tf.train.Checkpoint, step: int, rank: int = 0) -> dict:
        problem = None if (step, rank) in self._checked else self.damage(step, rank)
        if problem:
            raise IOError(f"checkpoint {join(self.url, self.name(step))} is damaged: {problem}")
        checkpoint.read(os.path.join(self._restore_dir(step, rank), "ckpt")).expect_partial()
        return self.marker(step)

    def _restore_dir(self, step: int, rank: int) -> str:
        return os.path.join(self.local_dir, f"restore-{rank}", self.name(step))


def latest_position(store: CheckpointStore, say=print) -> dict | None:
    """The newest committed checkpoint that is intact, and the position it holds (rank 0 reads it
    for everyone); each damaged newer one is named in one line and skipped."""
    for step in reversed(store.committed()):
        problem = store.damage(step)
        if problem is None:
            return position(store, step)
        say(f"checkpoint {join(store.url, store.name(step))} is damaged ({problem}); falling back "
            "to the previous committed checkpoint", flush=True)
    if store.committed():
        raise IOError(f"every committed checkpoint in {store.url} is damaged; delete them to "
                      "start from scratch")
    return None


def position(store: CheckpointStore, step: int) -> dict:
    marker = store.marker(step)
    return {"checkpoint": join(store.url, store.name(step)), "step": step,
            "epoch": marker.get("epoch", 0), "batch": marker.get("batch", 0),
            "steps_per_epoch": marker.get("steps_per_epoch"), "global_batch": marker.get("global_batch"),
            "dataset": marker.get("dataset"), "dataset_version": marker.get("dataset_version")}


def resumable(store: CheckpointStore, version: str, dataset: str, allow: bool, say=print) -> dict | None:
    """The newest intact checkpoint's position (None: start afresh), if it was trained on this
    version of the data, or `allow` (--resume-other-version) says go on anyway."""
    latest = latest_position(store, say)
    check_dataset_version(latest, version, dataset, allow, say)
    return latest


def check_dataset_version(latest: dict | None, version: str, dataset: str, allow: bool, say) -> None:
    """A resume onto another version of the data than the checkpoint was trained on (the dataset
    republished, or another --dataset) is named, and refused unless `allow`: mixing them
    silently would train a model on data nobody asked for. Markers older than this record no
    version and pass."""
    trained_on = (latest or {}).get("dataset_version")
    if trained_on is None or trained_on == version:
        return
    what = (f"checkpoint {latest['checkpoint']} was trained on dataset version {trained_on} "
            f"({latest.get('dataset')}); --dataset {dataset} is version {version}")
    if not allow:
        raise UsageError(f"{what}: pass --resume-other-version to go on from it anyway, or use a new "
                         "--checkpoint-dir")
    say(f"{what}: going on from it (--resume-other-version)", flush=True)


def resume(store: CheckpointStore, checkpoint: tf.train.Checkpoint, latest: dict, steps: int,
           rank: int, say) -> tuple[int, int]:
    """Restore the checkpoint rank 0 chose (`latest`, broadcast); returns the (epoch, batch) to
    go on from. A copy damaged since rank 0 checked it raises on this rank: the job stops, and the
    relaunch chooses again, instead of this rank going on from another checkpoint."""
    store.restore(checkpoint, latest["step"], rank)
    epoch, batch = latest["epoch"], latest["batch"]
    if latest["steps_per_epoch"] and latest["steps_per_epoch"] != steps:   # another world size
        batch = batch * steps // latest["steps_per_epoch"]
        say(f"steps per epoch changed from {latest['steps_per_epoch']} to {steps}: going on at the "
            f"same fraction of the epoch, batch {batch}", flush=True)
    say(f"resumed from {latest['checkpoint']}: epoch {epoch + 1}, {batch} of {steps} batches done",
        flush=True)
    return epoch, batch
