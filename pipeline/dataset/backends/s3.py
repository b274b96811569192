"""s3://bucket/key through boto3: AWS, or an S3-compatible store (MinIO, Ceph, SeaweedFS, moto)
chosen by `S3Settings` (the Beam job fills it from Beam's --s3_* flags) or boto3's
AWS_ENDPOINT_URL(_S3) variables. Credentials come from the settings or boto3's usual chain and
are never part of a message or a repr. Conditional writes and deletes are S3's If-None-Match /
If-Match (S3 has supported them since 2024)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import shutil
import tempfile
import threading
from typing import Iterator

from pipeline.dataset.backends import s3_faults
from pipeline.dataset.backends.base import Backend, StorageError, WriteConflict
from pipeline.dataset.backends.s3_faults import TransientStorageError

SCHEME = "s3://"
REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
           "AccessDenied", "InvalidClientTokenId", "403", "Forbidden")
CONFLICTS = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """What the boto3 client is built from (Beam's --s3_* flags); None: boto3's own default."""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = dataclasses.field(default=None, repr=False)
    secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    verify: bool | str | None = None        # False: no TLS verification; a path: a CA bundle
    use_ssl: bool = True
    api_version: str | None = None


def split_s3(url: str) -> tuple[str, str]:
    """s3://bucket/some/key -> ("bucket", "some/key")."""
    if not url.startswith(SCHEME):
        raise StorageError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len(SCHEME):].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {url}")
    return bucket, key


class S3Backend(Backend):
    """One boto3 client per thread (boto3 clients are thread-safe, sessions are not)."""

    def __init__(self, settings: S3Settings):
        self.settings = settings
        self._local = threading.local()

    @staticmethod
    def join(base: str, *parts: str) -> str:
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])

    @staticmethod
    def relative(url: str, prefix: str) -> str:
        return posixpath.relpath(url, prefix.rstrip("/"))

    @property
    def client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore.config import Config

            s = self.settings
            config = Config(retries={"total_max_attempts": s3_faults.ATTEMPTS, "mode": "standard"},
                            max_pool_connections=32, connect_timeout=10, read_timeout=120)
            client = boto3.session.Session().client(
                "s3", endpoint_url=s.endpoint_url, region_name=s.region, config=config,
                aws_access_key_id=s.access_key_id, aws_secret_access_key=s.secret_access_key,
                aws_session_token=s.session_token, verify=s.verify, use_ssl=s.use_ssl,
                api_version=s.api_version)
            self._local.client = client
        return client

    def _call(self, what: str, url: str, fn, *args, **kwargs):
        """Run one boto3 call (botocore retries it); turn its failure into FileNotFoundError,
        WriteConflict, TransientStorageError (worth retrying later) or a StorageError, each
        naming the URL and what the server answered."""
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError,
                                         EndpointConnectionError, NoCredentialsError)

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(url) from None
            if code in CONFLICTS:
                raise WriteConflict(f"{what} {url}: changed by someone else meanwhile") from None
            if code == "NoSuchBucket":
                raise StorageError(f"{what} {url}: bucket {split_s3(url)[0]!r} does not exist") from None
            if code in REFUSED:
                raise StorageError(f"{what} {url}: {code}: the store refused these credentials "
                                   "or this access (--s3_access_key_id / --s3_secret_access_key "
                                   "or AWS_* variables, and the bucket's policy)") from None
            error = TransientStorageError if s3_faults.is_transient(code) else StorageError
            raise error(f"{what} {url}: S3 at {self.where} answered {s3_faults.answered(e)}") from None
        except NoCredentialsError:
            raise StorageError(f"{what} {url}: no S3 credentials found (pass "
                               "--s3_access_key_id and --s3_secret_access_key, or set "
                               "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)") from None
        except (EndpointConnectionError, ConnectTimeoutError) as e:
            raise TransientStorageError(f"{what} {url}: cannot reach S3 at {self.where} "
                                        f"({s3_faults.ATTEMPTS} tries): {e}") from None
        except s3_faults.broken_body_errors() as e:
            raise TransientStorageError(f"{what} {url}: S3 at {self.where} answered, but its reply "
                                        f"broke off ({s3_faults.ATTEMPTS} tries): {e}") from None
        except BotoCoreError as e:
            raise StorageError(f"{what} {url}: S3 at {self.where}: {e}") from None

    @property
    def where(self) -> str:
        return (self.settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint")

    def exists(self, url: str) -> bool:
        try:
            self._call("stat", url, self.client.head_object, **self._key(url))
            return True
        except FileNotFoundError:
            return False

    def size(self, url: str) -> int:
        return self._call("stat", url, self.client.head_object, **self._key(url))["ContentLength"]

    def read(self, url: str) -> bytes:
        return self.read_versioned(url)[0]

    def read_versioned(self, url: str) -> tuple[bytes, str]:
        data, response = s3_faults.read_body(url, lambda: self._call(
            "read", url, self.client.get_object, **self._key(url)))
        return data, response["ETag"]

    def read_range(self, url: str, start: int, end: int) -> bytes:
        try:
            data, _ = s3_faults.read_body(url, lambda: self._call(
                "read", url, self.client.get_object, **self._key(url), Range=f"bytes={start}-{end - 1}"))
        except StorageError as e:
            if "InvalidRange" in str(e):          # past the end (an empty object has no byte 0)
                return b""
            raise
        return data

    def list(self, prefix_url: str, skipped: list | None = None) -> Iterator[tuple[str, int]]:
        for bucket, page in self._pages(prefix_url):
            for obj in page.get("Contents", []):
                yield f"{SCHEME}{bucket}/{obj['Key']}", obj["Size"]

    def stamps(self, prefix_url: str) -> Iterator[tuple[str, int, str]]:
        for bucket, page in self._pages(prefix_url):
            for obj in page.get("Contents", []):
                yield f"{SCHEME}{bucket}/{obj['Key']}", obj["Size"], obj.get("ETag", "")

    def stamp(self, url: str) -> str:
        return self._call("stat", url, self.client.head_object, **self._key(url))["ETag"]

    def list_children(self, prefix_url: str, skipped: list | None = None) -> Iterator[tuple[str, int | None]]:
        for bucket, page in self._pages(prefix_url, Delimiter="/"):
            for obj in page.get("Contents", []):
                yield f"{SCHEME}{bucket}/{obj['Key']}", obj["Size"]
            for sub in page.get("CommonPrefixes", []):      # "a//": its folder is "a/", not "a"
                yield f"{SCHEME}{bucket}/{sub['Prefix'][:-1]}", None

    def _pages(self, prefix_url: str, **options) -> Iterator[tuple[str, dict]]:
        """(bucket, page) of list_objects_v2 under a prefix, each call's failure named."""
        bucket, key = split_s3(prefix_url)
        prefix = key.rstrip("/") + "/" if key else ""
        pages = iter(self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, **options))
        while True:
            page = self._call("list", prefix_url, next, pages, None)
            if page is None:
                return
            yield bucket, page

    def download(self, url: str, local_path: str) -> None:
        self._call("download", url, self.client.download_file, *split_s3(url), local_path)

    def upload(self, local_path: str, url: str) -> None:
        self._call("upload", url, self.client.upload_file, local_path, *split_s3(url))

    @contextlib.contextmanager
    def writing(self, url: str):
        """In a local temporary folder, uploaded once complete (an S3 PUT is atomic)."""
        folder = tempfile.mkdtemp(prefix="upload-")
        try:
            path = os.path.join(folder, posixpath.basename(url) or "object")
            yield path
            self.upload(path, url)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def write(self, url: str, data: bytes, if_none_match: bool = False,
              if_match: str | None = None) -> str:
        condition = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match} if if_match else {}
        try:
            response = self._call("write", url, self.client.put_object, **self._key(url), Body=data,
                                  **condition)
        except FileNotFoundError:      # If-Match on an object that is gone
            raise WriteConflict(f"write {url}: deleted by someone else meanwhile") from None
        except WriteConflict:
            token = s3_faults.ours_already(self.read_versioned, url, data)   # a lost reply?
            if token is None:
                raise
            return token
        return response["ETag"]

    def delete(self, url: str, if_match: str | None = None) -> None:
        condition = {"IfMatch": if_match} if if_match is not None else {}
        try:
            self._call("delete", url, self.client.delete_object, **self._key(url), **condition)
        except FileNotFoundError:      # only a conditional delete of a gone object says so
            if if_match is None:
                raise
            raise WriteConflict(f"delete {url}: deleted by someone else meanwhile") from None

    def delete_prefix(self, prefix_url: str) -> None:
        for url, _ in list(self.list(prefix_url)):
            self.delete(url)

    def move(self, src: str, dst: str) -> None:
        """A server-side copy, then the delete."""
        (sb, sk), (db, dk) = split_s3(src), split_s3(dst)
        self._call("copy", src, self.client.copy, {"Bucket": sb, "Key": sk}, db, dk)
        self.delete(src)

    def ensure_bucket(self, url: str) -> None:
        bucket, _ = split_s3(url)
        try:
            self._call("stat", url, self.client.head_bucket, Bucket=bucket)
        except (FileNotFoundError, StorageError):
            try:
                self._call("create bucket", url, self.client.create_bucket, Bucket=bucket)
            except StorageError as e:          # created meanwhile by another of our processes
                if "BucketAlreadyOwnedByYou" not in str(e):
                    raise

    @staticmethod
    def _key(url: str) -> dict:
        bucket, key = split_s3(url)
        return {"Bucket": bucket, "Key": key}
