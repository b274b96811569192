"""What TensorFlow, absl, horovodrun and mpirun print that tells the user nothing, and how it
is kept off the terminal (`--verbose` keeps it).

TensorFlow 2.21 logs through absl before anything has called absl::InitializeLog(), so absl
first says so ("WARNING: All log messages before absl::InitializeLog() is called are written to
STDERR") and then writes every message, whatever TF_CPP_MIN_LOG_LEVEL says: the oneDNN note
("I0000 ... port.cc:153] oneDNN custom operations are on ...") comes twice per process (two
libraries, each with its own absl), measured here with TF_CPP_MIN_LOG_LEVEL 2 and 3,
GLOG_minloglevel and ABSL_MIN_LOG_LEVEL. No variable stops it (TF_ENABLE_ONEDNN_OPTS=0 would,
by changing the numerics: not an option), so the trainer imports TensorFlow with its file
descriptor 2 read into a file and gives back every line but these (`imported_quietly`).
TF_CPP_MIN_LOG_LEVEL=2 (trainer/__init__.py) still quiets what TensorFlow logs later.

horovodrun's own process imports TensorFlow too (to check how Horovod was built) and, when a
rank fails, mpirun adds its blocks and horovodrun (with Gloo) its traceback: nothing the
ranks' own error line does not say. Those processes are not ours, so the project's launchers
(infra/demo.py, infra/nightly/launch.py) show their output through `LauncherLines`."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

__all__ = ["LauncherLines", "banner", "imported_quietly"]

# A rank's line as horovodrun relays it: "[0]<stderr>:" (Gloo) or "[1,0]<stderr>:" (mpirun).
RANK_PREFIX = re.compile(r"^\[[\d,]+\]<std(?:out|err)>:")
BANNERS = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    # absl's INFO lines (I<mmdd> <time> <thread> <file>:<line>]), the oneDNN note among them.
    re.compile(r"^I\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] "),
    # horovodrun with Gloo, after a rank failed, and the shell of a rank it then ended.
    re.compile(r"^Process \d+ exit with status code -?\d+\.$"),
    re.compile(r"^Terminating remaining workers after failure of Process \d+\.$"),
    re.compile(r"^Terminated$"),
)
# mpirun's blocks between lines of dashes that only say a rank failed (its line says why).
MPIRUN_BLOCKS = ("Primary job  terminated normally", "mpirun detected that one or more processes exited",
                 "mpirun noticed that process rank")
DASHES = re.compile(r"^-{20,}$")
# horovodrun's traceback after a rank failed under Gloo, and what follows its last line.
HOROVOD_FAILED = "RuntimeError: Horovod detected that one or more processes exited with non-zero status"
HOROVOD_TAIL = re.compile(r"^(Process name: \S+|Exit code: -?\d+|)$")


def banner(line: str) -> bool:
    """A line of TensorFlow's, absl's or horovodrun's that says nothing the user needs (a rank's
    prefix ignored)."""
    text = RANK_PREFIX.sub("", line.rstrip("\n"))
    return any(pattern.match(text) for pattern in BANNERS)


@contextlib.contextmanager
def imported_quietly(verbose: bool = False):
    """`with imported_quietly(): import tensorflow`: file descriptor 2 goes to a temporary file
    while the block runs, and every line written there but the banners is written to stderr
    after it (also when the block raises). `verbose`: nothing is held back."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not banner(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class LauncherLines:
    """horovodrun's output (its own lines, mpirun's and the ranks'), fed line by line, without
    the banners and blocks above; a block is held until its end says what it is.

        lines = LauncherLines()
        for line in output: show(lines.feed(line))
        show(lines.flush())"""

    def __init__(self):
        self.held: list[str] = []
        self.kind = None           # "dashes", "traceback", "tail" (after horovodrun's traceback)

    def feed(self, line: str) -> list[str]:
        text = line.rstrip("\n")
        if self.kind == "tail":
            if HOROVOD_TAIL.match(text):
                return []
            self.kind = None
        if self.kind == "dashes":
            return self._in_dashes(line, text)
        if self.kind == "traceback":
            return self._in_traceback(line, text)
        if DASHES.match(text):
            self.kind, self.held = "dashes", [line]
            return []
        if text == "Traceback (most recent call last):":       # horovodrun's own: ranks' are prefixed
            self.kind, self.held = "traceback", [line]
            return []
        return [] if banner(line) else [line]

    def flush(self) -> list[str]:
        held, self.held, self.kind = self.held, [], None
        return held

    def _in_dashes(self, line: str, text: str) -> list[str]:
        self.held.append(line)
        if not DASHES.match(text):
            return []
        block = self.flush()
        return [] if any(words in "".join(block) for words in MPIRUN_BLOCKS) else block

    def _in_traceback(self, line: str, text: str) -> list[str]:
        self.held.append(line)
        if text.startswith(" ") or not text:
            return []                                    # a frame: the exception line is next
        block = self.flush()
        if text.startswith(HOROVOD_FAILED):
            self.kind = "tail"                           # then "Process name: 0", "Exit code: 2"
            return []
        return block
