"""The ingestion job's flags, as Beam PipelineOptions so Beam's own flags (--runner,
--direct_num_workers, --s3_endpoint_url, ...) sit beside them and just work."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.images import DEFAULT_MAX_PIXELS
from pipeline.sharding import DEFAULT_TARGET_SHARD_BYTES


class IngestOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--source", help="where the images are: s3://bucket/prefix or a local "
                            "directory; every object under it is an image candidate")
        parser.add_argument("--labels_file", "--labels-file", help="CSV with header key,label[,split]; key is the object "
                            "path relative to --source (default: <source>/labels.csv)")
        parser.add_argument("--classes", help="the class list: comma-separated names, or the URL/path "
                            "of a text file with one class per line (default: the sorted distinct "
                            "labels). Labels outside it are quarantined")
        parser.add_argument("--output", help="dataset directory to publish: s3://bucket/prefix or a "
                            "local path")
        parser.add_argument("--name", help="dataset name used in shard file names "
                            "(default: last part of --output)")
        parser.add_argument("--splits", default="train:0.8,validation:0.1,test:0.1",
                            help="ratios for records whose labels row names no split; assignment "
                            "hashes the record id, so it is stable across runs (default: %(default)s)")
        parser.add_argument("--num_readers", "--num-readers", type=int, default=8,
                            help="trainer processes expected to read the dataset: shard counts are "
                            "rounded to a multiple of it (default: %(default)s)")
        parser.add_argument("--num_shards", "--num-shards", type=int, default=0,
                            help="shards per split, overriding the size rule (default: by rule)")
        parser.add_argument("--target_shard_mb", type=float,
                            default=DEFAULT_TARGET_SHARD_BYTES / 2**20,
                            help="target shard size in MiB (default: %(default)s)")
        parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                            help="images with more pixels are quarantined (default: %(default)s)")
        parser.add_argument("--fetch_threads", type=int, default=16,
                            help="concurrent object reads per worker; object stores are latency "
                            "bound (default: %(default)s)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace a dataset already published at --output")
