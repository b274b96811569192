"""One Beam SDK worker pool: the EXTERNAL environment's contract, as the pipeline image's
sidecar serves it to Flink's task managers in k8s/. It is Beam's own
BeamFnExternalWorkerPoolServicer in process mode, as `python -m
apache_beam.runners.worker.worker_pool_main --service_port W` runs it, with two differences:

- it listens on ONE address (--bind, default 127.0.0.1): worker_pool_main listens on all of them
  ([::]), and whoever reaches a worker pool can have it start a worker that runs their code;
- the `python` its workers are started with (Beam runs the bare name from PATH) is this one,
  so they import the same Beam, and the project from PYTHONPATH.

    python -m infra.local.worker_pool [--bind 127.0.0.1] [--port 0] [--port-file FILE]

Each job's runner asks the pool for its SDK workers (one process each); they inherit the
pool's environment: that is where a job's S3 endpoint and credentials come from
(AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...), as on a Flink task manager. Their warnings and
tracebacks go to the pool's stderr (its log file, when infra/local/beam_cluster.py starts it)."""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import sys
import threading

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import (BeamFnExternalWorkerPoolServicer,
                                                         kill_process_gracefully)
from apache_beam.utils import thread_pool_executor

from infra.local.job_service import write_port

log = logging.getLogger("infra.local.worker_pool")
# worker_pool_main's server options (keep the connection however the job service pings it)
SERVER_OPTIONS = [("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)]


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start(bind: str, port: int) -> tuple[grpc.Server, int, BeamFnExternalWorkerPoolServicer]:
    """The pool's gRPC server on bind:port (0: a free port); returns it with its port."""
    server = grpc.server(thread_pool_executor.shared_unbounded_instance(), options=SERVER_OPTIONS)
    try:
        port = server.add_insecure_port(address(bind, port))
    except RuntimeError:
        port = 0
    if not port:
        raise SystemExit(f"worker pool: cannot listen on {address(bind, port)}")
    pool = BeamFnExternalWorkerPoolServicer(use_process=True)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()
    atexit.register(lambda: [kill_process_gracefully(p) for p in pool._worker_processes.values()])
    return server, port, pool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.worker_pool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="127.0.0.1", help="the one address to listen on "
                        "(default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    parser.add_argument("--port-file", help="write the port there once the pool answers")
    args = parser.parse_args(argv)
    if args.bind in ("", "0.0.0.0", "::", "[::]"):
        parser.error(f"--bind {args.bind!r}: name one address, not all of them")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        force=True)     # Beam logged (and so configured the root) on import
    # Beam starts each worker as the bare `python` of PATH: make it this interpreter.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    server, port, _ = start(args.bind, args.port)
    if args.port_file:
        write_port(args.port_file, port)
    log.info("Beam SDK worker pool on %s (pid %d)", address(args.bind, port), os.getpid())
    try:
        stopping.wait()
    except KeyboardInterrupt:
        pass
    server.stop(0)
    return 0                                 # atexit stops the workers still running


if __name__ == "__main__":
    sys.exit(main())
