"""What every local server needs from the operating system: free ports, and a child process that
never outlives the process that started it."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dies_with_parent(command: list[str]) -> list[str]:
    """Linux: prefix `command` so the server gets SIGTERM when the process that started it dies
    (even by kill -9), so a crashed test run or demo never leaves a server behind.

    setpriv sets the parent-death signal and then execs the command. A Python `preexec_fn` would do
    the same, but it makes subprocess fork the whole interpreter and run every library's fork
    handlers; gRPC's (loaded by Beam) aborted such a child before it could exec (SIGABRT, seen in CI)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now: all sockets are held open until the last one is
    chosen, so no two are the same (another process may still take one before the server does)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            s = held.enter_context(socket.socket())
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def stop(process: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; always reaped."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def child_env(env) -> dict:
    """`env`, with this checkout importable and this Python's bin first on PATH."""
    paths = [PROJECT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != PROJECT]
    bin_dir = os.path.dirname(sys.executable)
    return {**env, "PYTHONPATH": os.pathsep.join(paths),
            "PATH": os.pathsep.join([bin_dir, env.get("PATH", "/usr/bin:/bin")])}


def children(pid: int) -> list[int]:
    """The process ids of `pid`'s children (every thread's), from /proc."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found
