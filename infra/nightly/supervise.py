"""A child command that cannot outlive the nightly, nor run past its time limit.

    python -m infra.nightly.supervise --limit-seconds N -- COMMAND ...

The nightly starts `python -m pipeline` and `horovodrun` through this small process. When the
nightly dies (even by kill -9), when the limit passes, or when this process is told to stop, it
ends COMMAND's whole process tree: SIGTERM to every descendant, SIGKILL to what is left after a
grace period. A process group is not enough: mpirun starts each rank in a group of its own, and
horovodrun execs into a shell that leaves mpirun behind when it dies (both seen here).
Exit code: COMMAND's, or 124 when the limit ended it (as timeout(1)), 143 when stopped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

TIMED_OUT, STOPPED = 124, 143
GRACE_SECONDS = 10.0


def command_for(command: list[str], limit_seconds: float | None) -> list[str]:
    """`command` run under this supervisor, which gets SIGTERM when its parent dies (setpriv
    sets the parent-death signal; without it the supervisor polls its parent instead)."""
    limit = ["--limit-seconds", str(limit_seconds)] if limit_seconds else []
    supervised = [sys.executable, "-m", "infra.nightly.supervise", *limit, "--", *command]
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *supervised] if setpriv else supervised


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, parents before children (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def end_tree(process: subprocess.Popen, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to the process and all its descendants, SIGKILL to any left after `grace` s."""
    tree = [process.pid, *descendants(process.pid)]
    signal_all(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in tree):
        process.poll()                        # reap our direct child so it stops counting
        time.sleep(0.1)
    signal_all([pid for pid in tree + descendants(process.pid) if alive(pid)], signal.SIGKILL)
    process.wait()


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"     # a zombie is gone
    except OSError:
        return False


class Stop(Exception):
    pass


def supervise(command: list[str], limit_seconds: float | None) -> int:
    parent = os.getppid()
    process = subprocess.Popen(command)

    def stop(*_):
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + limit_seconds if limit_seconds else None
    try:
        while process.poll() is None:
            if os.getppid() != parent:         # the nightly is gone (no setpriv on this host)
                raise Stop()
            if deadline and time.monotonic() > deadline:
                print(f"nightly: {command[0]} still running after {limit_seconds:g} s "
                      "(the step's time limit); ending it", file=sys.stderr, flush=True)
                end_tree(process)
                return TIMED_OUT
            time.sleep(0.5)
        return process.returncode
    except Stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        end_tree(process)
        return STOPPED


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.nightly.supervise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit-seconds", type=float, help="end the command after this long")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given (python -m infra.nightly.supervise -- COMMAND ...)")
    return supervise(command, args.limit_seconds)


if __name__ == "__main__":
    sys.exit(main())
