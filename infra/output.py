"""A child command's output as the project's launchers (the demo, the nightly) show it: line by
line, without the banners of TensorFlow, absl, horovodrun and mpirun (trainer/banners.py), its
progress lines (pipeline/dataset/progress_line.py) kept as one line updated in place on a
terminal; every line as it came also in a log file when one is named. `verbose`: every line
shown as it came."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import threading

from pipeline.dataset.progress_line import LiveLine, parse
from trainer.banners import LauncherLines

DRAIN_SECONDS = 10.0     # for the command's last lines after it ended


def run_shown(command: list[str], env: dict | None = None, log_path: str | None = None,
              verbose: bool = False, screen: LiveLine | None = None) -> int:
    """Run `command` (stdout and stderr merged) to its end; its exit code."""
    screen = screen or LiveLine(sys.stdout)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, "w")) if log_path else None
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, bufsize=1, errors="replace")
        reader = threading.Thread(target=relay, args=(child.stdout, screen, log, verbose), daemon=True)
        reader.start()
        code = child.wait()
        # A process the command left behind may hold the pipe open: its end is not waited for.
        reader.join(DRAIN_SECONDS)
        screen.end()
    return code


def relay(stream, screen: LiveLine, log, verbose: bool) -> None:
    lines = LauncherLines()
    for line in stream:
        if log and not log.closed:
            log.write(line)
            log.flush()
        show(screen, [line] if verbose else lines.feed(line))
    show(screen, lines.flush())


def show(screen: LiveLine, lines: list[str]) -> None:
    for line in lines:
        if parse(line):
            screen.progress(line)
        else:
            screen.write(line)
            screen.flush()
