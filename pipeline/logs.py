"""Where an ingestion run's lines go: the terminal gets the job's own lines (start, progress,
warnings, summary); everything else, Beam's and the libraries' INFO and the workers' output,
goes to the run's log file, which the summary names.

Local workers (the DirectRunner's processes) inherit the launcher's stderr, so while the job
runs file descriptor 2 itself is pointed at the log file and the terminal keeps a duplicate of
the original: a worker's traceback or a C library's warning lands in the file, not on the
terminal. With --log_level (or -v for INFO) the terminal shows every logger at that level, and
nothing is redirected.

Two kinds of the job's own lines are marked with `extra=`: PROGRESS, the progress line, which
on a terminal is one line rewritten in place (in the log file, a line each time); FILE_ONLY,
what the summary line says again (the version published), kept for the log file."""
from __future__ import annotations

import logging
import os
import sys

from pipeline.dataset.progress_line import LiveLine

# Warnings that say nothing about this run (Beam's GCP modules without the GCP extras).
NOISE = ("apitools not found",)
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
PROGRESS = {"progress": True}
FILE_ONLY = {"file_only": True}


def not_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(NOISE)


def from_a_worker(record: logging.LogRecord) -> bool:
    """A line a worker logged, relayed by the DirectRunner's job service (Beam's "Worker: %s"),
    or a message a portable runner's job service sent (a failed job's whole traceback, as an
    ERROR: the failure reaches the terminal as one line)."""
    relayed = record.module == "portable_runner" and record.funcName == "read_messages"
    return record.msg == "Worker: %s" or relayed


def ours_or_warning(record: logging.LogRecord) -> bool:
    """The terminal's lines by default: the launcher's own, and warnings other than the workers'
    (those are in the log file; their outcome reaches the summary as counts or a failure)."""
    if getattr(record, "file_only", False):
        return False
    ours = record.name.split(".")[0] == "pipeline"
    return (ours or record.levelno >= logging.WARNING) and not_noise(record) and not from_a_worker(record)


class TerminalFormat(logging.Formatter):
    """The message alone; warnings and errors say so ("warning: ...")."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class TerminalHandler(logging.StreamHandler):
    """The terminal's handler: a progress record (extra=PROGRESS) goes to the LiveLine's
    progress line, every other record above it."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "progress", False) and isinstance(self.stream, LiveLine):
            try:
                self.stream.progress(self.format(record))
            except Exception:
                self.handleError(record)
            return
        super().emit(record)


def quiet_logs() -> None:
    """Before the run's log exists (--help, flag errors): our lines, and libraries' warnings."""
    logging.basicConfig(level=logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(TerminalFormat("%(message)s"))
        handler.addFilter(ours_or_warning)


class RunLog:
    """with RunLog(path, level): ... (or start() / stop()): the terminal and the log file of one run."""

    def __init__(self, path: str, level: str | None = None):
        self.path, self.level = path, level
        self.saved_stderr = None

    def __enter__(self) -> "RunLog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "RunLog":
        """Open the log file (OSError if it cannot be written) and route the lines."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.file = open(self.path, "a", buffering=1)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(logging.DEBUG if self.level == "DEBUG" else logging.INFO)
        to_file = logging.StreamHandler(self.file)
        to_file.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(to_file)
        self.terminal = LiveLine(self._redirect_stderr() if self.level is None else sys.stderr)
        root.addHandler(self._console())
        return self

    def _redirect_stderr(self):
        """Point fd 2 (which workers and C libraries write to) at the file; return a stream on
        the original stderr for the terminal's lines."""
        sys.stderr.flush()
        self.saved_stderr = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return os.fdopen(os.dup(self.saved_stderr), "w", buffering=1)

    def _console(self) -> logging.Handler:
        console = TerminalHandler(self.terminal)
        console.setFormatter(TerminalFormat("%(message)s"))
        console.addFilter(ours_or_warning if self.level is None else not_noise)
        if self.level is not None:
            console.setLevel(self.level)
        return console

    def stop(self) -> None:
        self.terminal.end()
        if self.saved_stderr is not None:
            sys.stderr.flush()
            os.dup2(self.saved_stderr, 2)
            os.close(self.saved_stderr)
            self.terminal.close()
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        self.file.close()
        quiet_logs()
