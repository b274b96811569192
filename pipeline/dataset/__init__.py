"""THE dataset contract: what the ingestion job publishes and every reader relies on.

    records.py        one image as a tf.train.Example (encoded without TensorFlow)
    example_proto.py  tf.train.Example's wire format, declared without TensorFlow
    tfrecord.py       the TFRecord file framing, written and read without TensorFlow
    manifest.py       manifest.json: the shard list with sha256s, classes, statistics (the commit point)
    quarantine.py     what a quarantine entry holds and how its reasons are counted
    storage.py        files by URL: s3:// (boto3) or local paths
    reader.py         a split's shards for one (rank, size): which files, staged and sha256-checked

This package imports neither Beam nor the trainer (tests/test_layering.py checks it); TensorFlow
only where a reader needs it. The trainer and the nightly import nothing else from pipeline/.
"""
