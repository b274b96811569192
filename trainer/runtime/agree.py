"""Errors found before training reach the user once, as one line, whichever rank found them.

Without this, a rank that fails a check exits while the others wait in the next collective;
Horovod then shuts down and each of them prints a "Horovod has been shut down" traceback. So
each check's outcome is exchanged in a collective first: a check every rank runs is allgathered,
a check rank 0 runs for everyone is broadcast, and if any rank failed, every rank stops. Rank 0
raises the error (its one line is printed by trainer/__main__.py); the others raise
ReportedByRankZero and exit with the same code, silently.
"""
from __future__ import annotations

from trainer.errors import USAGE, USER_ERRORS, OneLine, exit_code


class ReportedByRankZero(Exception):
    """Another rank's error, which rank 0 prints; this rank exits with `code` and says nothing."""

    def __init__(self, code: int):
        super().__init__(f"exit {code}: the error is printed by rank 0")
        self.code = code


def outcome(check):
    """(value, None) or (None, (exit code, the error's one line))."""
    try:
        return check(), None
    # Before training, an OSError is the user's to fix as well: a checkpoint or --init-from
    # file that cannot be read. (During training one keeps its traceback.)
    except (*USER_ERRORS, OSError) as e:
        return None, (exit_code(e), str(e) or type(e).__name__)


def on_every_rank(check, rank: int, allgather_object):
    """Run `check` on every rank; if it failed anywhere, stop everywhere (rank 0 names the ranks
    that failed when not all did)."""
    value, error = outcome(check)
    errors = allgather_object(error)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        codes = {code for _, (code, _) in failed}
        stop(rank, one_line([(r, line) for r, (_, line) in failed], len(errors)),
             codes.pop() if len(codes) == 1 else USAGE)
    return value


def on_rank_zero(check, rank: int, broadcast_object):
    """Run `check` on rank 0 only; every rank gets its value, or stops with its error."""
    value, error = outcome(check) if rank == 0 else (None, None)
    value, error = broadcast_object((value, error), root_rank=0)
    if error is not None:
        stop(rank, error[1], error[0])
    return value


def one_line(failed: list[tuple[int, str]], size: int) -> str:
    messages = list(dict.fromkeys(e for _, e in failed))        # distinct, in rank order
    if len(failed) == size and len(messages) == 1:
        return messages[0]
    return "; ".join(f"rank {', '.join(str(r) for r, e in failed if e == m)}: {m}" for m in messages)


def stop(rank: int, message: str, code: int):
    if rank == 0:
        raise OneLine(message, code)
    raise ReportedByRankZero(code)
