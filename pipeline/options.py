"""The ingestion job's flags, as Beam PipelineOptions so Beam's own flags (--runner,
--direct_num_workers, --s3_endpoint_url, ...) sit beside them and just work.

Every flag of the job takes both spellings, --num_readers and --num-readers (Beam's own flags
take underscores only): `BothSpellings` adds the dash form, and argparse keeps the underscore
name as the option's attribute, which is what Beam hands to the workers."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.decode_budget import DEFAULT_WORKER_MEMORY_GB
from pipeline.images import DEFAULT_MAX_PIXELS
from pipeline.sharding import DEFAULT_TARGET_SHARD_BYTES
from pipeline.staging import LEASE_SECONDS
from pipeline.sources.cassandra import config as cassandra_config
from pipeline.sources.files import LAYOUTS
from pipeline.sources.listing import DEFAULT_MAX_IMAGE_BYTES


class BothSpellings:
    """An argparse parser (or group) whose every --flag_name also answers to --flag-name."""

    def __init__(self, parser):
        self.parser = parser

    def add_argument(self, *names, **options):
        dashed = [n.replace("_", "-") for n in names if n.startswith("--") and "_" in n]
        return self.parser.add_argument(*names, *[n for n in dashed if n not in names], **options)

    def add_argument_group(self, *args, **options) -> "BothSpellings":
        return BothSpellings(self.parser.add_argument_group(*args, **options))


class IngestOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser = BothSpellings(parser)
        for flags in (_source_flags, _label_flags, _output_flags, _shard_flags, _input_limit_flags,
                      _image_flags, _run_flags):
            flags(parser)
        cassandra_config.add_flags(parser)


def _source_flags(parser) -> None:
    parser.add_argument("--source", help="where the images are: s3://bucket/prefix or a local "
                        "directory (every object under it is an image candidate), or a "
                        "Cassandra table cassandra://host1,host2:port/keyspace/table (one "
                        "image per row; see the --cassandra_* flags)")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="how labels are kept: `labels` (a labels file, CSV or JSONL), "
                        "`folders` (<source>/<class>/<image>), `attributes` (name.png beside "
                        "name.csv with rows \"attribute\", value, number_of_values). auto: a "
                        "labels file if there is one, else attributes if .csv files are "
                        "there, else folders (default: %(default)s)")
    parser.add_argument("--labels_file", help="CSV with header key,label[,split], "
                        "JSONL with {\"key\", \"label\"[, \"split\"]} or a Parquet table (.parquet) "
                        "with those columns; key is the object path relative to --source "
                        "(default: <source>/labels.csv, .jsonl or .parquet)")
    parser.add_argument("--key_column", default="key", help="the labels file's column of object "
                        "keys (default: %(default)s)")
    parser.add_argument("--label_column", default="label", help="the labels file's column of labels "
                        "(a Parquet table: strings or integers) (default: %(default)s)")
    parser.add_argument("--split_column", default="split", help="the labels file's column of splits, "
                        "if it has one (default: %(default)s)")


def _label_flags(parser) -> None:
    parser.add_argument("--label_attribute", help="attributes layout: the attribute that "
                        "becomes the primary `label` (default: the first in sorted order); "
                        "every attribute is stored as label/<attribute>")
    parser.add_argument("--classes", help="the class list: comma-separated names, or the URL/path "
                        "of a text file with one class per line (default: the sorted distinct "
                        "labels). Labels outside it are quarantined")
    parser.add_argument("--strict_classes", action="store_true",
                        help="refuse to publish when a class of --classes has no records "
                        "(default: publish, with a warning and the manifest's empty_classes)")
    parser.add_argument("--splits", default="train:0.8,validation:0.1,test:0.1",
                        help="ratios for records whose labels row names no split; assignment "
                        "hashes the record id, so it is stable across runs (default: %(default)s)")


def _output_flags(parser) -> None:
    parser.add_argument("--output", help="dataset directory to publish: s3://bucket/prefix or a "
                        "local path")
    parser.add_argument("--name", help="dataset name used in shard file names "
                        "(default: last part of --output)")
    parser.add_argument("--span", help="a version or date such as 2026-11-23: the dataset is "
                        "published at <output>/<span>, and {span} in --source/--labels_file "
                        "is replaced by it, so a nightly run ingests only that day's prefix")
    parser.add_argument("--overwrite", action="store_true",
                        help="publish a new version over a dataset already published at "
                        "--output; the old version is retired only afterwards (see "
                        "--keep_versions)")
    parser.add_argument("--no_index", action="store_true",
                        help="publish no Parquet index beside the shards (index-<split>-<i>-of-<n>.parquet: "
                        "one row per record, for pipeline.dataset.load_index)")
    parser.add_argument("--keep_versions", type=int, default=2,
                        help="published versions kept at --output, the new one included, so "
                        "a trainer still reading the previous one finishes (default: "
                        "%(default)s)")
    parser.add_argument("--reingest", action="store_true",
                        help="ingest even when --output already holds a version published from "
                        "this same input (same objects, labels, classes, flags and job code); "
                        "without it such a run says so and publishes nothing")
    parser.add_argument("--staging_lease_seconds", type=float, default=LEASE_SECONDS,
                        help="a run keeps a lease on its staging folder while it runs; once a "
                        "killed run's lease is this old, the next run into the same output "
                        "removes what it left (default: %(default)g)")
    parser.add_argument("--shared_filesystem", action="store_true",
                        help="local --source/--output paths are on a file system every "
                        "worker mounts at the same path (without it a cluster runner refuses "
                        "local paths)")


def _shard_flags(parser) -> None:
    parser.add_argument("--num_readers", type=int, default=8,
                        help="trainer processes expected to read the dataset: shard counts are "
                        "rounded to a multiple of it (default: %(default)s)")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="shards per split, overriding the size rule (default: by rule)")
    parser.add_argument("--target_shard_mb", type=float,
                        default=DEFAULT_TARGET_SHARD_BYTES / 2**20,
                        help="target shard size in MiB (default: %(default)s)")
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="images with more pixels are quarantined (default: %(default)s)")
    parser.add_argument("--channels", type=int, default=0,
                        help="convert every image to 1 (grey) or 3 (RGB) channels; 0 keeps "
                        "them as they are (default: %(default)s)")
    parser.add_argument("--resize", help="resize every image to HEIGHTxWIDTH (e.g. 224x224); "
                        "converted or resized images are stored as PNG")
    parser.add_argument("--fetch_threads", type=int, default=16,
                        help="concurrent object reads per worker; object stores are latency "
                        "bound (default: %(default)s)")


def _input_limit_flags(parser) -> None:
    parser.add_argument("--max_image_bytes", type=int, default=DEFAULT_MAX_IMAGE_BYTES,
                        help="objects under --source larger than this are quarantined unread (and "
                        "no read takes more than an object's listed size) (default: %(default)s)")


def _image_flags(parser) -> None:
    parser.add_argument("--ignore_orientation", action="store_true",
                        help="take every JPEG as stored, ignoring its EXIF orientation (for "
                        "collections known to be upright); by default the orientation is recorded "
                        "and every reader, the trainer and the served model turn the pixels upright")
    parser.add_argument("--worker_memory_gb", type=float, default=DEFAULT_WORKER_MEMORY_GB,
                        help="memory each worker process may spend decoding images at once; a "
                        "large image waits for room (default: %(default)s, at least what one image "
                        "of --max_pixels needs)")


def _run_flags(parser) -> None:
    parser.add_argument("--log_file", help="this run's full log: Beam's and the "
                        "workers' lines and any traceback (default: runs/logs/ingest-<run id>.log)")
    parser.add_argument("--log_level", choices=("DEBUG", "INFO", "WARNING"),
                        help="show every library's lines (Beam's own, the workers') at this "
                        "level on the terminal too (default: only the job's start, progress, "
                        "warnings and summary)")
    parser.add_argument("-v", "--verbose", action="store_true", help="--log_level INFO")
    parser.add_argument("--progress_seconds", type=float, default=10.0,
                        help="seconds between progress lines (default: %(default)s)")
