"""Beam's own local job service (apache_beam.runners.portability.local_job_service, what
`python -m apache_beam.runners.portability.local_job_service_main` runs), with two patches of
Beam's behaviour: a job gets as many SDK workers as its --direct_num_workers asks for, and a
job whose SDK worker dies fails (Beam's waits for it forever).

    python -m infra.local.job_service [--port 0] [--port-file FILE]     # infra/local/beam_cluster.py starts it

Why the first patch (Beam 2.77): the job service runs each job with FnApiRunner.run_via_runner_api,
and only FnApiRunner.run_pipeline (the DirectRunner's way in) reads --direct_num_workers into the
runner's worker count; through the job service every job ran on ONE SDK worker whatever it
asked for. The patch sets that count from the job's options the way run_pipeline does (0: one
per CPU) before calling run_via_runner_api; the runner then asks the EXTERNAL worker pool for
that many workers. Nothing else differs from Beam's: the same servicer, the same gRPC server on
localhost, the same results (tests/test_beam_portable.py compares them with the DirectRunner's).
It sets the private FnApiRunner._num_workers, so it is checked again on each Beam upgrade (the
test asserts that two SDK workers ran).

Why the second patch: Beam's runner waits for a bundle's outputs on the worker's data channel and for its answer on the control
channel; when the worker is killed (kill -9, the OOM killer, its host gone) before it opened its
data channel, or before it ever connected, neither wait ends (seen here: a job hung for 600 s
after kill -9 of a worker that had just started). `watch` follows each EXTERNAL worker: if it has
not connected within --worker-connect-timeout seconds, or once its control stream ends, every
instruction it has not answered, and every later one, gets an error answer: the runner's wait
ends there (its abort callback) and the job fails with that error as its last line. It patches
ExternalWorkerHandler.start_worker and one ControlConnection's push (private parts, checked on
each Beam upgrade by tests/test_beam_portable.py's kill -9 tests)."""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability.api import beam_fn_api_pb2, beam_job_api_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

log = logging.getLogger("infra.local.job_service")
WORKER_CONNECT_TIMEOUT = 120.0     # seconds from StartWorker to the worker's control connection
WORKER_GONE = "SDK worker {id} {what} (killed, crashed, or its host is gone); its pool's log may say why"


def worker_count(options: PipelineOptions) -> int:
    """--direct_num_workers as FnApiRunner.run_pipeline reads it (the job service hands options
    over as strings)."""
    count = int(options.view_as(DirectOptions).direct_num_workers or 1)
    return multiprocessing.cpu_count() if count == 0 else count


class JobWithWorkers(local_job_service.BeamJob):
    """Beam's BeamJob; only _invoke_runner differs: the runner's worker count is the job's."""

    def _invoke_runner(self):
        self.set_state(beam_job_api_pb2.JobState.RUNNING)
        options = self.pipeline_options()
        runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
        runner._num_workers = worker_count(options)      # the patch: what run_pipeline would set
        log.info("job %s: %d SDK workers", self._job_id, runner._num_workers)
        return runner.run_via_runner_api(self._pipeline_proto, options)


def watch(handler, connect_timeout: float) -> None:
    """Refuse the instructions of an EXTERNAL worker that never connects or goes away."""
    connection = handler.control_conn
    deadline = time.monotonic() + connect_timeout
    while connection._state == worker_handlers.BeamFnControlServicer.UNSTARTED_STATE:
        if time.monotonic() > deadline:
            return refuse(connection, WORKER_GONE.format(
                id=handler.worker_id, what=f"did not connect within {connect_timeout:g} s"))
        time.sleep(0.2)
    connection._read_thread.join()            # the worker's control stream ended
    refuse(connection, WORKER_GONE.format(id=handler.worker_id, what="went away mid-job"))


def refuse(connection, why: str) -> None:
    """Answer the connection's unanswered instructions, and every one sent to it later, with the
    error `why` (what the runner waits for ends at an error answer)."""
    push = connection.push

    def answer(request):
        if request is worker_handlers.BeamFnControlServicer._DONE_MARKER:
            return push(request)              # closing the connection, as usual
        return worker_handlers.ControlFuture(request.instruction_id, errored(request.instruction_id, why))

    connection.push = answer
    for instruction, future in list(connection._futures_by_id.items()):
        if not future.is_done():
            connection._futures_by_id.pop(instruction, None)
            future.set(errored(instruction, why))


def errored(instruction: str, why: str):
    return beam_fn_api_pb2.InstructionResponse(instruction_id=instruction, error=why)


def watch_external_workers(connect_timeout: float) -> None:
    """Patch ExternalWorkerHandler.start_worker: each worker it starts is watched (`watch`)."""
    start = worker_handlers.ExternalWorkerHandler.start_worker

    def start_and_watch(handler):
        start(handler)
        threading.Thread(target=watch, args=(handler, connect_timeout), daemon=True,
                         name=f"watch-{handler.worker_id}").start()

    worker_handlers.ExternalWorkerHandler.start_worker = start_and_watch


def write_port(path: str, port: int) -> None:
    """Written whole (renamed into place): whoever waits for the file reads a complete number."""
    with open(path + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.job_service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="the Job API port on localhost "
                        "(default: a free one)")
    parser.add_argument("--port-file", help="write the port there once the service answers")
    parser.add_argument("--worker-connect-timeout", type=float, default=WORKER_CONNECT_TIMEOUT,
                        help="seconds an SDK worker may take to connect before its job fails "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        force=True)     # Beam logged (and so configured the root) on import
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    watch_external_workers(args.worker_connect_timeout)
    servicer = local_job_service.LocalJobServicer(beam_job_type=JobWithWorkers)
    port = servicer.start_grpc_server(args.port)
    try:
        if args.port_file:
            write_port(args.port_file, port)
        log.info("Beam job service (with the worker-count patch) on localhost:%d", port)
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        servicer.stop()                      # and its staging directory
    return 0


if __name__ == "__main__":
    sys.exit(main())
