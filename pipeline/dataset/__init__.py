"""THE dataset contract: what the ingestion job publishes and every reader relies on.

    records.py        one image as a tf.train.Example (encoded without TensorFlow)
    example_proto.py  tf.train.Example's wire format, declared without TensorFlow
    tfrecord.py       the TFRecord file framing, written and read without TensorFlow
    manifest.py       manifest.json: the shard list with sha256s, classes, statistics (the commit point)
    index.py          the Parquet index of a version: one row per record; load_index(url) (pyarrow)
    ranged_file.py    a stored file as a seekable Python file read by ranged GETs (Parquet's reads)
    naming.py         every file and folder name of a dataset and of a run's staging, built and parsed
    quarantine.py     what a quarantine entry holds and how its reasons are counted
    image_sizes.py    each split's image sizes, formats and channels (the manifest's image_sizes)
    storage.py        files by URL (s3:// or local paths), one backend per scheme: backends/
    local_files.py    atomic, durable and conditional local writes and deletes, a local file's sha256,
                      a folder one live process owns
    local_paths.py    remote names made local paths without leaving their folder; the per-user cache
    lease.py          one holder at a time for a folder of a store (the nightly, a checkpoint folder)
    reader.py         a split's shards for one (rank, size): which files, staged and sha256-checked
    shard_cache.py    shards fetched ahead of a reader within a disk budget, sha256-checked
    crops.py          photos of many sizes to one input size: random-resized and center crops (TensorFlow)
    headers.py        an encoded image's size and EXIF orientation from its header; turned upright (TensorFlow)
    load.py           a split as a tf.data.Dataset, for any reader (TensorFlow)
    progress_line.py  the progress line every command shows (count, rate, percentage, time left)

This package imports neither Beam nor the trainer, and TensorFlow only in crops.py, headers.py and load.py
(and inside records.parse_spec, when a reader calls it), so the ingestion job never loads it
(tests/test_layering.py checks these arrows). The trainer and the nightly import nothing else from
pipeline/.
"""

__all__ = ["load_index"]


def __getattr__(name: str):
    """`pipeline.dataset.load_index`, imported when first asked for: pyarrow is loaded by the
    readers that use the index, never by every importer of the contract."""
    if name == "load_index":
        from pipeline.dataset.index import load_index
        return load_index
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
