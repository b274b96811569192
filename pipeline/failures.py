"""A failed run as one line on the terminal: the step that failed (when a worker's error names
it) and what went wrong, in the words of whatever failed. The whole traceback is in the run's
log file.

What reaches the launcher depends on the runner: the DirectRunner raises the worker's exception;
a portable runner's job service sends its traceback as text, which ends with whatever the
runner raised: a worker's exception, gRPC's multi-line repr of a failed call (whose last line
is a lone `>`: the line that says something is its `details`), or "Channel closed prematurely."
when an SDK worker died mid-bundle."""
from __future__ import annotations

import re

# A failed gRPC call, as grpc's _InactiveRpcError / _MultiThreadedRendezvous print it.
GRPC_STATUS = re.compile(r'status = StatusCode\.(\w+)\s+details = "(.*)"')
WORKER_GONE = "Channel closed prematurely."


def failed_step(error: Exception) -> str:
    """" in <step>" for an error a worker raised (Beam names the transform it ran), else ""."""
    steps = re.findall(r"\[while running '([^']+)'\]", str(error))
    return f" in {steps[-1]}" if steps else ""


def last_line(error: Exception) -> str:
    """The line of the error that says what went wrong."""
    text = str(error).strip()
    if not text:
        return repr(error)
    calls = GRPC_STATUS.findall(text)
    if calls:
        status, details = calls[-1]
        where = ("the SDK worker pool (--environment_config) did not answer: "
                 if "StartWorker" in text else "")
        return f"{where}{details} (gRPC {status})"
    line = text.splitlines()[-1]
    if line.endswith(WORKER_GONE):
        return (f"{line} (an SDK worker's connection closed mid-bundle: killed, crashed, or its "
                "host is gone; its pool's log may say why)")
    return line
