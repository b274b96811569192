"""The Horovod trainer: reads a published dataset (manifest + shards), trains, checkpoints."""
