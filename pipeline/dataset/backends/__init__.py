"""The stores behind `pipeline.dataset.storage.Storage`, one module each, one interface:

    base.py    the interface every backend implements, and the errors callers see
    local.py   local paths (and shared file systems mounted at one path)
    s3.py      s3://bucket/key through boto3 (AWS or an S3-compatible store)

Storage picks one per URL by its scheme (storage.BACKENDS); nothing else names a backend."""
