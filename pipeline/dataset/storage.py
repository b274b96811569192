"""Files on local disk or in S3 behind one small interface, through boto3.

TensorFlow's own s3:// filesystem (tensorflow-io) is not used: it is broken on current
TensorFlow. Objects are read and written with boto3; an S3-compatible endpoint (MinIO, moto,
Ceph) is selected by `endpoint_url` or boto3's standard AWS_ENDPOINT_URL(_S3) variables, and
credentials come from boto3's usual chain. Writes are atomic on both backends: a local file is
written beside its target and renamed, an S3 PUT is atomic by itself.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from typing import Iterator


class StorageError(Exception):
    """A storage operation failed; the message names the URL and the cause."""


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
    return os.path.join(base, *parts)


def file_digest(path: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a local file, read in 1 MiB chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def split_s3(url: str) -> tuple[str, str]:
    """s3://bucket/some/key -> ("bucket", "some/key")."""
    if not is_s3(url):
        raise StorageError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {url}")
    return bucket, key


class Storage:
    """Read, write, list and move files by URL. Picklable, so Beam DoFns can carry one."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None):
        self.endpoint_url = endpoint_url or None
        self.region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self._local = threading.local()

    def __getstate__(self):
        return {"endpoint_url": self.endpoint_url, "region": self.region}

    def __setstate__(self, state):
        self.__init__(**state)

    # -- S3 plumbing -------------------------------------------------------------------------
    @property
    def s3(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 5, "mode": "standard"},
                            max_pool_connections=32, connect_timeout=10, read_timeout=120)
            client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config)
            self._local.client = client
        return client

    def _call(self, what: str, url: str, fn, *args, **kwargs):
        """Run one boto3 call; turn its failure into a StorageError naming the URL."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(url) from None
            if code == "NoSuchBucket":
                raise StorageError(f"{what} {url}: bucket {split_s3(url)[0]!r} does not exist") from None
            raise StorageError(f"{what} {url}: {code or e}") from None
        except BotoCoreError as e:
            where = self.endpoint_url or "the default AWS endpoint"
            raise StorageError(f"{what} {url}: cannot reach S3 at {where}: {e}") from None

    # -- reading -----------------------------------------------------------------------------
    def exists(self, url: str) -> bool:
        if not is_s3(url):
            return os.path.exists(url)
        bucket, key = split_s3(url)
        try:
            self._call("stat", url, self.s3.head_object, Bucket=bucket, Key=key)
            return True
        except FileNotFoundError:
            return False

    def read_bytes(self, url: str) -> bytes:
        if not is_s3(url):
            with open(url, "rb") as f:
                return f.read()
        bucket, key = split_s3(url)
        response = self._call("read", url, self.s3.get_object, Bucket=bucket, Key=key)
        return self._call("read", url, response["Body"].read)

    def read_text(self, url: str) -> str:
        return self.read_bytes(url).decode("utf-8")

    def list(self, prefix_url: str) -> Iterator[tuple[str, int]]:
        """Yield (url, size) of every file under a prefix, page by page (never all keys at once)."""
        if not is_s3(prefix_url):
            for root, _, files in os.walk(prefix_url):
                for name in sorted(files):
                    path = os.path.join(root, name)
                    yield path, os.path.getsize(path)
            return
        for bucket, page in self._pages(prefix_url):
            for obj in page.get("Contents", []):
                yield f"s3://{bucket}/{obj['Key']}", obj["Size"]

    def list_children(self, prefix_url: str) -> Iterator[tuple[str, int | None]]:
        """One level under a prefix: (url, size) per file, (url, None) per folder, page by page."""
        if not is_s3(prefix_url):
            for entry in sorted(os.scandir(prefix_url), key=lambda e: e.name):
                yield (entry.path, None) if entry.is_dir() else (entry.path, entry.stat().st_size)
            return
        for bucket, page in self._pages(prefix_url, Delimiter="/"):
            for obj in page.get("Contents", []):
                yield f"s3://{bucket}/{obj['Key']}", obj["Size"]
            for sub in page.get("CommonPrefixes", []):
                yield f"s3://{bucket}/{sub['Prefix'].rstrip('/')}", None

    def _pages(self, prefix_url: str, **options) -> Iterator[tuple[str, dict]]:
        """(bucket, page) of list_objects_v2 under a prefix, each call's failure named."""
        bucket, key = split_s3(prefix_url)
        prefix = key.rstrip("/") + "/" if key else ""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix,
                                                                   **options)
        iterator = iter(pages)
        while True:
            page = self._call("list", prefix_url, next, iterator, None)
            if page is None:
                return
            yield bucket, page

    def download(self, url: str, local_path: str) -> None:
        os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
        partial = f"{local_path}.{os.getpid()}.partial"
        if is_s3(url):
            bucket, key = split_s3(url)
            self._call("download", url, self.s3.download_file, bucket, key, partial)
        else:
            shutil.copyfile(url, partial)
        os.replace(partial, local_path)

    # -- writing -----------------------------------------------------------------------------
    def write_bytes(self, url: str, data: bytes) -> None:
        if is_s3(url):
            bucket, key = split_s3(url)
            self._call("write", url, self.s3.put_object, Bucket=bucket, Key=key, Body=data)
            return
        directory = os.path.dirname(url) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, url)

    def write_text(self, url: str, text: str) -> None:
        self.write_bytes(url, text.encode("utf-8"))

    def upload(self, local_path: str, url: str) -> None:
        if is_s3(url):
            bucket, key = split_s3(url)
            self._call("upload", url, self.s3.upload_file, local_path, bucket, key)
            return
        os.makedirs(os.path.dirname(url) or ".", exist_ok=True)
        tmp = url + ".partial"
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, url)

    def move(self, src: str, dst: str) -> None:
        """Rename locally; on S3 a server-side copy then delete (no bytes pass through here)."""
        if is_s3(src) != is_s3(dst):
            raise StorageError(f"cannot move between backends: {src} -> {dst}")
        if not is_s3(src):
            os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            os.replace(src, dst)
            return
        (sb, sk), (db, dk) = split_s3(src), split_s3(dst)
        self._call("copy", src, self.s3.copy, {"Bucket": sb, "Key": sk}, db, dk)
        self.delete(src)

    def delete(self, url: str) -> None:
        if not is_s3(url):
            if os.path.isdir(url):
                shutil.rmtree(url, ignore_errors=True)
            elif os.path.exists(url):
                os.remove(url)
            return
        bucket, key = split_s3(url)
        self._call("delete", url, self.s3.delete_object, Bucket=bucket, Key=key)

    def delete_prefix(self, prefix_url: str) -> None:
        if not is_s3(prefix_url):
            self.delete(prefix_url)
            return
        for url, _ in list(self.list(prefix_url)):
            self.delete(url)

    def ensure_bucket(self, url: str) -> None:
        """Create the bucket of an s3:// URL if missing (local stacks and tests)."""
        if not is_s3(url):
            return
        bucket, _ = split_s3(url)
        try:
            self._call("stat", url, self.s3.head_bucket, Bucket=bucket)
        except (FileNotFoundError, StorageError):
            self._call("create bucket", url, self.s3.create_bucket, Bucket=bucket)
