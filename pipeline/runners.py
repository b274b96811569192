"""What the job sets and checks for Beam's portable runners (PortableRunner, and the Flink and
Spark runners built on it) before it starts: their defaults, and a job service that answers.

Beam 2.77's --job_server_timeout (default 300 s) is two things at once: how long the launcher
waits for the job service to answer, and the gRPC deadline of the job's state and message
streams, so a job that runs longer than it fails in the launcher (DEADLINE_EXCEEDED) while it
goes on in the job service; Beam's own help says the timeout "does not apply to the actual
pipeline run time". So the launcher waits for the job service itself, --job_server_timeout
seconds (30 unless given: an unreachable job service is one line within 30 s, not 300 s of
"workers starting"), and then hands Beam a deadline of a week for the job (RUN_DEADLINE)."""
from __future__ import annotations

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, PortableOptions, StandardOptions

PORTABLE_RUNNERS = ("PortableRunner", "FlinkRunner", "SparkRunner")
JOB_SERVICE_WAIT = 30              # seconds, when --job_server_timeout is not given
RUN_DEADLINE = 7 * 24 * 3600       # the job's state stream: longer than any ingestion run
DEFAULT_WORKERS = 2                # SDK workers per job, as the DirectRunner's default


class RunnerError(Exception):
    """The runner cannot be used as given; the message names the flag."""


def runner_name(options: PipelineOptions) -> str:
    return str(options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]


def is_portable(options: PipelineOptions) -> bool:
    return runner_name(options) in PORTABLE_RUNNERS


def set_portable_defaults(options: PipelineOptions, argv: list[str]) -> None:
    """2 SDK workers per job (our job service starts --direct_num_workers of them:
    infra/local/job_service.py), and the wait for the job service (see the module's doc)."""
    flags = " ".join(argv)
    if "--direct_num_workers" not in flags:
        options.view_as(DirectOptions).direct_num_workers = DEFAULT_WORKERS
    if "--job_server_timeout" not in flags and "--job-server-timeout" not in flags:
        options.view_as(PortableOptions).job_server_timeout = JOB_SERVICE_WAIT


def check_job_service(options: PipelineOptions) -> None:
    """Wait --job_server_timeout seconds for the job service at --job_endpoint to answer; then
    lift Beam's deadline off the job's streams (RUN_DEADLINE)."""
    portable = options.view_as(PortableOptions)
    endpoint, wait = portable.job_endpoint, portable.job_server_timeout
    if runner_name(options) == "PortableRunner" and not endpoint:
        raise RunnerError("--runner PortableRunner needs --job_endpoint HOST:PORT, the job service "
                          "(e.g. `python -m infra.local.beam_cluster up` prints it)")
    if endpoint and endpoint != "embed":
        answers(endpoint, wait)
    portable.job_server_timeout = RUN_DEADLINE


def answers(endpoint: str, seconds: float) -> None:
    import grpc

    channel = grpc.insecure_channel(endpoint)
    try:
        grpc.channel_ready_future(channel).result(timeout=seconds)
    except grpc.FutureTimeoutError:
        raise RunnerError(f"--job_endpoint {endpoint}: no job service answered within {seconds:g} s "
                          "(--job_server_timeout sets the wait)") from None
    finally:
        channel.close()
