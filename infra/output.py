"""A child command's output as the project's launchers (the demo, the nightly) show it: line by
line, without the banners of TensorFlow, absl, horovodrun and mpirun (trainer/banners.py), its
progress lines (pipeline/dataset/progress_line.py) kept as one line updated in place on a
terminal; every line as it came also in a log file when one is named. `verbose`: every line
shown as it came."""
from __future__ import annotations

import subprocess
import sys

from pipeline.dataset.progress_line import LiveLine, parse
from trainer.banners import LauncherLines


def run_shown(command: list[str], env: dict | None = None, log_path: str | None = None,
              verbose: bool = False, screen: LiveLine | None = None) -> int:
    """Run `command` (stdout and stderr merged) to its end; its exit code."""
    screen = screen or LiveLine(sys.stdout)
    lines = LauncherLines()
    log = open(log_path, "w") if log_path else None
    try:
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, bufsize=1, errors="replace")
        for line in child.stdout:
            if log:
                log.write(line)
                log.flush()
            show(screen, [line] if verbose else lines.feed(line))
        show(screen, lines.flush())
        return child.wait()
    finally:
        screen.end()
        if log:
            log.close()


def show(screen: LiveLine, lines: list[str]) -> None:
    for line in lines:
        if parse(line):
            screen.progress(line)
        else:
            screen.write(line)
            screen.flush()
