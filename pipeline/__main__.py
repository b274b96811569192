"""python -m pipeline --source s3://bucket/images --output s3://bucket/datasets/name [Beam flags]"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback

from pipeline import progress, staging
from pipeline.failures import failed_step, last_line
from pipeline.dataset.naming import refused_folder
from pipeline.dataset.storage import join
from pipeline.logs import PROGRESS, RunLog, quiet_logs

log = logging.getLogger("pipeline")

USAGE = """python -m pipeline --source URL --output URL [options] [Beam pipeline options]

Ingest labelled images from S3, a local directory or a Cassandra table into sharded TFRecords
plus a manifest.
Runs on Beam's DirectRunner with 2 worker processes unless --runner says otherwise; any Beam
option (--runner, --direct_num_workers, --s3_endpoint_url, --project, --flink_master, ...)
is passed through. The job's own flags take either spelling (--num_readers, --num-readers);
Beam's take underscores only."""


class HelpFormat(argparse.HelpFormatter):
    """`--num_readers, --num-readers NUM_READERS`: the value's name once (as Python 3.13 prints it)."""

    def _format_action_invocation(self, action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {value}"


def print_help() -> None:
    from pipeline.options import IngestOptions

    parser = argparse.ArgumentParser(prog="python -m pipeline", usage=USAGE, add_help=False,
                                     formatter_class=HelpFormat)
    IngestOptions._add_argparse_args(parser)
    parser.print_help()


def unknown_flags(argv: list[str]) -> list[str]:
    """Flags no registered PipelineOptions class knows (Beam itself only warns about them)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    import pipeline.options  # noqa: F401  (registers IngestOptions)

    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}  # as Beam does
    for cls in classes.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(argv)
    return [a for a in unknown if a.startswith("-")]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet_logs()
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0

    from pipeline.plan import Plan, UsageError, check_runner, make_options, storage_for

    try:
        bad = unknown_flags(argv)
        if bad:
            raise UsageError(f"unknown flag {bad[0]} (see --help)")
        options = make_options(argv)
        storage = storage_for(argv)
        plan = Plan(options, storage)
        check_runner(options, plan)
    except UsageError as e:
        print(f"pipeline: error: {e}", file=sys.stderr)
        return 2
    try:
        run_log = RunLog(plan.log_file, plan.log_level).start()
    except OSError as e:
        print(f"pipeline: error: --log_file {plan.log_file}: cannot write there ({e.strerror})",
              file=sys.stderr)
        return 2
    try:
        return run(options, storage, plan, run_log)
    finally:
        run_log.stop()


def run(options, storage, plan, run_log: RunLog) -> int:
    """The job, its commit and its summary; one line on the terminal if anything fails."""
    import apache_beam as beam

    from pipeline.job import build
    from pipeline.summary import summary_line, worker_warnings

    staging.remove(storage, plan.leftovers)      # of earlier runs into this output, even if nothing is to do
    if plan.already:
        records = sum(split.num_records for split in plan.already.splits.values())
        print(f"pipeline: {plan.output} already holds {plan.already.version or 'a dataset'} "
              f"({records:,} records), published from this same input (objects, labels, flags and "
              "job code): nothing to do (--reingest publishes it again)", flush=True)
        return 0
    started = time.monotonic()
    say_progress = lambda line: log.info(line, extra=PROGRESS)    # noqa: E731  (in place on a terminal)
    try:
        with staging.Lease(storage, plan.staging, plan.lease_seconds):   # "this run is alive"
            log.info("ingesting %s -> %s; log: %s (staging %s)", plan.source, plan.output, plan.log_file,
                     plan.staging)      # the launcher's work is done: from here on the workers read
            with progress.Watcher(storage, plan.staging, say_progress, plan.progress_seconds):
                with beam.Pipeline(options=options) as p:    # the workers write into staging only
                    build(p, plan, storage)
            manifest = commit_run(storage, plan)
    except Exception as e:
        run_log.file.write(traceback.format_exc())
        try:
            storage.delete_prefix(plan.staging)   # never part of a dataset: nothing to keep
        except Exception:  # the store itself may be what failed; the error below says so
            pass
        run_log.terminal.end()
        print(f"pipeline: failed{failed_step(e)}: {last_line(e)} (details: {plan.log_file})",
              file=run_log.terminal, flush=True)
        return 1
    run_log.terminal.end()
    print(summary_line(manifest, plan.output, time.monotonic() - started, worker_warnings(p.result),
                       plan.log_file), flush=True)
    return 0


def commit_run(storage, plan):
    """The commit, once, here in the launcher after every worker is done, unless the staged
    dataset cannot be trained on (then its quarantine list is kept beside the output)."""
    from pipeline import publish_checks
    from pipeline.publish import publish, read_request

    request = read_request(storage, plan.staging)
    problem = publish_checks.refusal(request)
    if not problem and plan.strict_classes and publish_checks.empty_classes(request):
        problem = (f"--strict_classes: no records for "
                   f"{', '.join(publish_checks.empty_classes(request))}")
    if problem:
        kept = join(plan.output, refused_folder(plan.run_id))
        entries = publish_checks.keep_quarantine(storage, plan.staging, kept, request)
        raise publish_checks.Unpublishable(
            f"nothing published: {problem}; {entries:,} quarantine entries are in {kept}/")
    for line in publish_checks.warnings(request):
        log.warning(line)
    return publish(storage, plan.staging, plan.output, request, plan.overwrite, plan.keep_versions)


if __name__ == "__main__":
    sys.exit(main())
