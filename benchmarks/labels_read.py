"""The labels file's read alone, as the ingestion job reads it (pipeline/sources/labels.py: byte
ranges of a CSV/JSONL, row groups of a Parquet table, spread over the workers), on the
multi-process DirectRunner; prints the rows and the rejected rows it counted. What
tests/test_parquet_labels.py watches the workers' memory of (benchmarks/ingest_scale.watched).

    python -m benchmarks.labels_read <labels URL> [--workers 2]
"""
from __future__ import annotations

import argparse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.dataset.storage import Storage
from pipeline.sources.label_columns import LabelColumns
from pipeline.sources.labels import RANGE_BYTES, part_readers
from pipeline.sources.rows import QUARANTINE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    split, read = part_readers(Storage(), args.labels, LabelColumns(), RANGE_BYTES)
    options = PipelineOptions(runner="DirectRunner", direct_running_mode="multi_processing",
                              direct_num_workers=args.workers)
    with beam.Pipeline(options=options) as pipeline:
        labels = (pipeline | beam.Create([args.labels]) | "Split" >> beam.ParDo(split)
                  | beam.Reshuffle() | "Read" >> beam.ParDo(read).with_outputs(QUARANTINE, main="rows"))
        for name, rows in (("rows", labels.rows), ("bad", labels[QUARANTINE])):
            _ = (rows | f"Count{name}" >> beam.combiners.Count.Globally()
                 | f"Print{name}" >> beam.Map(lambda n, name=name: print(f"{name} {n}", flush=True)))


if __name__ == "__main__":
    main()
