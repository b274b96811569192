"""python -m pipeline.score --model URL --source URL --output URL [options] [Beam pipeline options]"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time

from pipeline.dataset.storage import Storage, is_local, join
from pipeline.logs import quiet_logs
from pipeline.sources.cassandra import config as cassandra_config
from pipeline.sources.listing import DEFAULT_MAX_IMAGE_BYTES

USAGE = """python -m pipeline.score --model URL --source URL --output URL [options] [Beam options]

Apply a trained model (the trainer's SavedModel, through its serving signature) to every image
under --source and write one row per image and head to Parquet files under --output, with
_summary.json. --source is an S3 prefix or a local folder in any ingestion layout (label files
are left out), or a Cassandra table, cassandra://host:port/keyspace/table, read with the
ingestion's --cassandra_* flags. An image that cannot be read or decoded, or is too large, gets
its error in its row. Runs on Beam's DirectRunner with 2 worker processes unless --runner says
otherwise."""


class UsageError(ValueError):
    """A flag that cannot work; the message names it."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.score", usage=USAGE)
    p.add_argument("--model", required=True, help="the SavedModel's URL (a trainer's model_dir)")
    p.add_argument("--source", required=True, help="S3 prefix, local folder or cassandra:// table of images")
    p.add_argument("--output", required=True, help="folder for predictions-*.parquet and _summary.json")
    p.add_argument("--batch_size", "--batch-size", type=int, default=64,
                   help="images per call of the model (default 64)")
    p.add_argument("--num_files", "--num-files", type=int, default=4,
                   help="Parquet files written (default 4); each file's rows are held by one worker")
    p.add_argument("--max_image_bytes", "--max-image-bytes", type=int, default=DEFAULT_MAX_IMAGE_BYTES,
                   help="larger objects are not read: their rows say so (default 256 MiB)")
    cassandra_config.add_flags(p)       # --source cassandra://...: the ingestion's flags
    return p


def cassandra_source(args, options):
    """The CassandraConfig of a cassandra:// --source (checked by connecting once), else None."""
    from pipeline.plan import workers
    from pipeline.sources.cassandra.connection import check as check_table

    if not args.source.startswith(cassandra_config.SCHEME):
        return None
    try:
        config = cassandra_config.config_from(args, args.source, workers(options))
        check_table(config)
    except cassandra_config.CassandraSourceError as e:
        raise UsageError(str(e)) from None
    return config


def check(storage: Storage, args, runner: str) -> None:
    """One line per flag that cannot work, before any worker starts."""
    from pipeline.plan import LOCAL_RUNNERS

    if args.batch_size < 1 or args.num_files < 1:
        raise UsageError("--batch_size and --num_files must be at least 1")
    if not storage.exists(join(args.model, "COMMITTED")):
        raise UsageError(f"--model {args.model}: no committed SavedModel there (no COMMITTED marker)")
    if not args.source.startswith(cassandra_config.SCHEME) and next(iter(storage.list(args.source)), None) is None:
        raise UsageError(f"--source {args.source}: nothing there")
    if any(url.rsplit("/", 1)[-1].startswith("predictions-") for url, _ in storage.list(args.output)):
        raise UsageError(f"--output {args.output} already holds predictions: choose another folder")
    if runner not in LOCAL_RUNNERS and (is_local(args.output) or (
            is_local(args.source) and not args.source.startswith(cassandra_config.SCHEME))):
        raise UsageError(f"--runner {runner} runs its workers elsewhere: --source and --output must be s3://")


def build(p, storage: Storage, args, cassandra=None) -> None:
    """The job: read, batch, predict, write."""
    import apache_beam as beam

    from pipeline.score.transforms import Predict, ReadImages, WriteFiles

    _ = (p | "ReadImages" >> ReadImages(storage, args.source, args.max_image_bytes, cassandra)   # Image
           | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=args.batch_size)  # [Image]
           | "Predict" >> beam.ParDo(Predict(storage, args.model))                    # row (table.py)
           | "WriteFiles" >> WriteFiles(storage, args.output, args.num_files))        # file URL


def summary(storage: Storage, args, seconds: float) -> dict:
    """What the files hold (their error column read, nothing else), written as _summary.json."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted(url for url, _ in storage.list(args.output) if url.endswith(".parquet"))
    rows = errors = 0
    for url in files:
        column = pq.read_table(io.BytesIO(storage.read_bytes(url)), columns=["error"]).column("error")
        rows += len(column)
        errors += int(pc.sum(pc.not_equal(column, "")).as_py() or 0)
    return {"model": args.model, "source": args.source, "files": files, "rows": rows, "errors": errors,
            "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet_logs()
    args, beam_argv = parser().parse_known_args(argv)

    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    from pipeline.plan import make_options, storage_for

    options = make_options(beam_argv)
    storage = storage_for(beam_argv)
    try:
        check(storage, args, options.view_as(StandardOptions).runner or "DirectRunner")
        cassandra = cassandra_source(args, options)
    except UsageError as e:
        print(f"pipeline.score: error: {e}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        with beam.Pipeline(options=options) as p:
            build(p, storage, args, cassandra)
        done = summary(storage, args, time.monotonic() - started)
        storage.write_text(join(args.output, "_summary.json"), json.dumps(done, indent=2))
    except Exception as e:
        print(f"pipeline.score: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr, flush=True)
        return 1
    print(f"pipeline.score: {done['rows']:,} rows ({done['errors']:,} with an error) in "
          f"{len(done['files'])} files under {args.output}; {done['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
