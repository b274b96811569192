"""One nightly run at a time: a lock object beside the models, with an expiry kept fresh by a
heartbeat, so a crashed run's lock goes stale and the next run takes it over.

The protocol (create-only write, compare-and-swap refresh and takeover, the nonce as fencing
token) is the contract's lease (pipeline/dataset/lease.py), which the trainer also takes on its
--checkpoint-dir; this names it for the nightly's messages.
"""
from __future__ import annotations

from pipeline.dataset.lease import Lease, LeaseHeld, LeaseLost, describe

__all__ = ["LockHeld", "LockLost", "NightlyLock", "describe"]

LockHeld = LeaseHeld          # another run holds a fresh lock; the message says who and since when
LockLost = LeaseLost          # our lock was taken over: stop before promoting anything


class NightlyLock(Lease):
    kind = "nightly run"
    prefix = "nightly"
    lost_suffix = "; nothing promoted"
