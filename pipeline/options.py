"""The ingestion job's flags, as Beam PipelineOptions so Beam's own flags (--runner,
--direct_num_workers, --s3_endpoint_url, ...) sit beside them and just work."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.images import DEFAULT_MAX_PIXELS
from pipeline.sharding import DEFAULT_TARGET_SHARD_BYTES
from pipeline.sources import LAYOUTS


class IngestOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
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
        parser.add_argument("--labels_file", "--labels-file", help="CSV with header key,label[,split] "
                            "or JSONL with {\"key\", \"label\"[, \"split\"]}; key is the object "
                            "path relative to --source (default: <source>/labels.csv or .jsonl)")
        parser.add_argument("--label_attribute", help="attributes layout: the attribute that "
                            "becomes the primary `label` (default: the first in sorted order); "
                            "every attribute is stored as label/<attribute>")
        parser.add_argument("--classes", help="the class list: comma-separated names, or the URL/path "
                            "of a text file with one class per line (default: the sorted distinct "
                            "labels). Labels outside it are quarantined")
        parser.add_argument("--output", help="dataset directory to publish: s3://bucket/prefix or a "
                            "local path")
        parser.add_argument("--name", help="dataset name used in shard file names "
                            "(default: last part of --output)")
        parser.add_argument("--span", help="a version or date such as 2026-11-23: the dataset is "
                            "published at <output>/<span>, and {span} in --source/--labels_file "
                            "is replaced by it, so a nightly run ingests only that day's prefix")
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
        parser.add_argument("--channels", type=int, default=0,
                            help="convert every image to 1 (grey) or 3 (RGB) channels; 0 keeps "
                            "them as they are (default: %(default)s)")
        parser.add_argument("--resize", help="resize every image to HEIGHTxWIDTH (e.g. 224x224); "
                            "converted or resized images are stored as PNG")
        parser.add_argument("--fetch_threads", type=int, default=16,
                            help="concurrent object reads per worker; object stores are latency "
                            "bound (default: %(default)s)")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace a dataset already published at --output")
        add_cassandra_args(parser)


def add_cassandra_args(parser):
    """--source cassandra://host1,host2:port/keyspace/table reads one image per row."""
    group = parser.add_argument_group(
        "Cassandra source (--source cassandra://host1,host2:9042/keyspace/table); credentials "
        "come from --cassandra_credentials_file or env CASSANDRA_USERNAME / CASSANDRA_PASSWORD")
    add = group.add_argument
    add("--cassandra_id_column", default="id", help="the row id (any type; str() of it, hex for "
        "blobs, becomes the record id) (default: %(default)s)")
    add("--cassandra_label_column", default="label", help="the class name (default: %(default)s)")
    add("--cassandra_image_column", default="image", help="the encoded image, a blob "
        "(default: %(default)s)")
    add("--cassandra_split_column", default="", help="optional column naming the split "
        "(train/validation/test); empty values fall back to the hash split (default: none)")
    add("--cassandra_consistency", default="LOCAL_ONE", help="read consistency level "
        "(default: %(default)s)")
    add("--cassandra_local_dc", default="", help="the data center to read from (default: the "
        "first contact point's)")
    add("--cassandra_protocol_version", type=int, default=0, help="CQL native protocol version; "
        "0 lets the driver negotiate (Cassandra 2.1 needs 3) (default: %(default)s)")
    add("--cassandra_credentials_file", help="file with lines username=... and password=... "
        "(else env CASSANDRA_USERNAME / CASSANDRA_PASSWORD; else no authentication)")
    add("--cassandra_ssl_ca", help="CA certificate (PEM) to verify the nodes: turns on TLS")
    add("--cassandra_ssl_cert", help="client certificate (PEM) for mutual TLS")
    add("--cassandra_ssl_key", help="client private key (PEM) for mutual TLS")
    add("--cassandra_splits", type=int, default=0, help="token ranges to read in parallel, at "
        "least; 0: 4 per worker or one per 32 MiB of the table's size estimate, whichever is "
        "more (default: %(default)s)")
    add("--cassandra_page_size", type=int, default=1000, help="rows per page (default: %(default)s)")
    add("--cassandra_retries", type=int, default=8, help="retries per token range on transient "
        "errors, with exponential backoff up to 15 s (default: %(default)s)")
