"""Beam's own local job service (apache_beam.runners.portability.local_job_service, what
`python -m apache_beam.runners.portability.local_job_service_main` runs), with one patch of
Beam's behaviour: a job gets as many SDK workers as its --direct_num_workers asks for.

    python -m infra.local.job_service [--port 0] [--port-file FILE]     # infra/local/beam_cluster.py starts it

Why the patch (Beam 2.77): the job service runs each job with FnApiRunner.run_via_runner_api,
and only FnApiRunner.run_pipeline (the DirectRunner's way in) reads --direct_num_workers into the
runner's worker count; through the job service every job ran on ONE SDK worker whatever it
asked for. The patch sets that count from the job's options the way run_pipeline does (0: one
per CPU) before calling run_via_runner_api; the runner then asks the EXTERNAL worker pool for
that many workers. Nothing else differs from Beam's: the same servicer, the same gRPC server on
localhost, the same results (tests/test_beam_portable.py compares them with the DirectRunner's).
It sets the private FnApiRunner._num_workers, so it is checked again on each Beam upgrade (the
test asserts that two SDK workers ran)."""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import sys
import threading

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner

log = logging.getLogger("infra.local.job_service")


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        force=True)     # Beam logged (and so configured the root) on import
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
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
