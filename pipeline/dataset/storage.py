"""Every file the project reads or writes, by URL: `s3://bucket/key` (boto3) or a local path.

Nothing else is accepted: a URL with any other scheme (gs://, hdfs://, file://, ...) is refused
with one line naming it, never taken for a relative local folder. (No GCS or HDFS server can run
here to test a client against; GCS also answers the S3 protocol, see `unsupported`.)

TensorFlow's own s3:// filesystem (tensorflow-io) is not used: it is broken on current
TensorFlow. An S3-compatible endpoint (MinIO, moto, Ceph) is chosen by `S3Settings` (the Beam
job fills it from Beam's --s3_* flags) or boto3's AWS_ENDPOINT_URL(_S3) variables; credentials
come from the settings or boto3's usual chain, and are never part of a message or a repr.
Writes are atomic on both backends (a local file is written beside its target and renamed, an
S3 PUT is atomic), and `write_bytes` can be conditional: create-only or replace-only-if-unchanged.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from typing import Iterator

from pipeline.dataset.local_files import local_token, write_local

REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
           "AccessDenied", "InvalidClientTokenId", "403", "Forbidden")


class StorageError(Exception):
    """A storage operation failed; the message names the URL and the cause."""


class WriteConflict(StorageError):
    """A conditional write found the object created or changed by someone else."""


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def unsupported(url: str) -> str | None:
    """Why `url` cannot be used (one line), or None for s3:// URLs and local paths."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme == "s3" or "/" in scheme:
        return None
    hint = (" (GCS also speaks S3: S3 endpoint https://storage.googleapis.com with HMAC keys, "
            "then s3://bucket/...)" if scheme in ("gs", "gcs") else "")
    return (f"{url}: {scheme}:// is not supported; use s3://bucket/prefix (AWS or an "
            f"S3-compatible store) or a local path{hint}")


def check_url(url: str) -> str:
    problem = unsupported(url)
    if problem:
        raise StorageError(problem)
    return url


def join(base: str, *parts: str) -> str:
    if is_s3(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
    return os.path.join(base, *parts)


def split_s3(url: str) -> tuple[str, str]:
    """s3://bucket/some/key -> ("bucket", "some/key")."""
    if not is_s3(url):
        raise StorageError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {url}")
    return bucket, key


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


class Storage:
    """Read, write, list and move files by URL. Picklable (credentials included), so Beam
    DoFns carry one to every worker."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None,
                 settings: S3Settings | None = None):
        settings = settings or S3Settings()
        self.settings = dataclasses.replace(
            settings, endpoint_url=endpoint_url or settings.endpoint_url or None,
            region=region or settings.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
        self._local = threading.local()

    @property
    def endpoint_url(self) -> str | None:
        return self.settings.endpoint_url

    def __repr__(self) -> str:
        return f"Storage({self.settings!r})"      # the dataclass repr leaves the secrets out

    def __getstate__(self):
        return {"settings": self.settings}

    def __setstate__(self, state):
        self.__init__(settings=state["settings"])

    # -- S3 plumbing -------------------------------------------------------------------------
    @property
    def s3(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore.config import Config

            s = self.settings
            config = Config(retries={"max_attempts": 5, "mode": "standard"},
                            max_pool_connections=32, connect_timeout=10, read_timeout=120)
            client = boto3.session.Session().client(
                "s3", endpoint_url=s.endpoint_url, region_name=s.region, config=config,
                aws_access_key_id=s.access_key_id, aws_secret_access_key=s.secret_access_key,
                aws_session_token=s.session_token, verify=s.verify, use_ssl=s.use_ssl,
                api_version=s.api_version)
            self._local.client = client
        return client

    def _call(self, what: str, url: str, fn, *args, **kwargs):
        """Run one boto3 call; turn its failure into a StorageError naming the URL."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(url) from None
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise WriteConflict(f"{what} {url}: changed by someone else meanwhile") from None
            if code == "NoSuchBucket":
                raise StorageError(f"{what} {url}: bucket {split_s3(url)[0]!r} does not exist") from None
            if code in REFUSED:
                raise StorageError(f"{what} {url}: {code}: the store refused these credentials "
                                   "or this access (--s3_access_key_id / --s3_secret_access_key "
                                   "or AWS_* variables, and the bucket's policy)") from None
            raise StorageError(f"{what} {url}: {code or e}") from None
        except NoCredentialsError:
            raise StorageError(f"{what} {url}: no S3 credentials found (pass "
                               "--s3_access_key_id and --s3_secret_access_key, or set "
                               "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)") from None
        except BotoCoreError as e:
            where = (self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                     or os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint")
            raise StorageError(f"{what} {url}: cannot reach S3 at {where}: {e}") from None

    # -- reading -----------------------------------------------------------------------------
    def exists(self, url: str) -> bool:
        if not is_s3(check_url(url)):
            return os.path.exists(url)
        bucket, key = split_s3(url)
        try:
            self._call("stat", url, self.s3.head_object, Bucket=bucket, Key=key)
            return True
        except FileNotFoundError:
            return False

    def read_bytes(self, url: str) -> bytes:
        if not is_s3(check_url(url)):     # no token: hashing every image read was 10 % of a job
            with open(url, "rb") as f:
                return f.read()
        return self.read_versioned(url)[0]

    def read_versioned(self, url: str) -> tuple[bytes, str]:
        """(bytes, token): the token is what a conditional `write_bytes(if_match=...)` expects."""
        if not is_s3(check_url(url)):
            with open(url, "rb") as f:
                data = f.read()
            return data, local_token(data)
        bucket, key = split_s3(url)
        response = self._call("read", url, self.s3.get_object, Bucket=bucket, Key=key)
        return self._call("read", url, response["Body"].read), response["ETag"]

    def size(self, url: str) -> int:
        if not is_s3(check_url(url)):
            return os.path.getsize(url)
        bucket, key = split_s3(url)
        return self._call("stat", url, self.s3.head_object, Bucket=bucket, Key=key)["ContentLength"]

    def read_head(self, url: str, size: int) -> bytes:
        """The first `size` bytes (a ranged GET): enough to check a huge file's format."""
        return self.read_range(url, 0, size)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        """Bytes [start, end) (fewer at the end of the file; a ranged GET on S3)."""
        if not is_s3(check_url(url)):
            with open(url, "rb") as f:
                f.seek(start)
                return f.read(max(0, end - start))
        bucket, key = split_s3(url)
        try:
            response = self._call("read", url, self.s3.get_object, Bucket=bucket, Key=key,
                                  Range=f"bytes={start}-{end - 1}")
        except StorageError as e:
            if "InvalidRange" in str(e):          # past the end (an empty object has no byte 0)
                return b""
            raise
        return self._call("read", url, response["Body"].read)

    def read_text(self, url: str) -> str:
        return self.read_bytes(url).decode("utf-8")

    def list(self, prefix_url: str) -> Iterator[tuple[str, int]]:
        """Yield (url, size) of every file under a prefix, page by page (never all keys at once)."""
        if not is_s3(check_url(prefix_url)):
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
        if not is_s3(check_url(prefix_url)):
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
        if is_s3(check_url(url)):
            bucket, key = split_s3(url)
            self._call("download", url, self.s3.download_file, bucket, key, partial)
        else:
            shutil.copyfile(url, partial)
        os.replace(partial, local_path)

    # -- writing -----------------------------------------------------------------------------
    def write_bytes(self, url: str, data: bytes, if_none_match: bool = False,
                    if_match: str | None = None) -> str:
        """Write atomically; returns the new token. `if_none_match`: only if nothing is there;
        `if_match`: only if the object still has this token. Either raises WriteConflict."""
        if is_s3(check_url(url)):
            bucket, key = split_s3(url)
            condition = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": if_match} if if_match else {}
            try:
                response = self._call("write", url, self.s3.put_object, Bucket=bucket, Key=key,
                                      Body=data, **condition)
            except FileNotFoundError:      # If-Match on an object that is gone
                raise WriteConflict(f"write {url}: deleted by someone else meanwhile") from None
            return response["ETag"]
        token = write_local(url, data, if_none_match, if_match)
        if token is None:
            raise WriteConflict(f"write {url}: changed by someone else meanwhile")
        return token

    def write_text(self, url: str, text: str, **condition) -> str:
        return self.write_bytes(url, text.encode("utf-8"), **condition)

    def upload(self, local_path: str, url: str) -> None:
        if is_s3(check_url(url)):
            bucket, key = split_s3(url)
            self._call("upload", url, self.s3.upload_file, local_path, bucket, key)
            return
        os.makedirs(os.path.dirname(url) or ".", exist_ok=True)
        tmp = url + ".partial"
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, url)

    def move(self, src: str, dst: str) -> None:
        """Rename locally; on S3 a server-side copy then delete (no bytes pass through here)."""
        if is_s3(check_url(src)) != is_s3(check_url(dst)):
            raise StorageError(f"cannot move between backends: {src} -> {dst}")
        if not is_s3(src):
            os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            os.replace(src, dst)
            return
        (sb, sk), (db, dk) = split_s3(src), split_s3(dst)
        self._call("copy", src, self.s3.copy, {"Bucket": sb, "Key": sk}, db, dk)
        self.delete(src)

    def delete(self, url: str) -> None:
        if not is_s3(check_url(url)):
            if os.path.isdir(url):
                shutil.rmtree(url, ignore_errors=True)
            elif os.path.exists(url):
                os.remove(url)
            return
        bucket, key = split_s3(url)
        self._call("delete", url, self.s3.delete_object, Bucket=bucket, Key=key)

    def delete_prefix(self, prefix_url: str) -> None:
        if not is_s3(check_url(prefix_url)):
            self.delete(prefix_url)
            return
        for url, _ in list(self.list(prefix_url)):
            self.delete(url)

    def ensure_bucket(self, url: str) -> None:
        """Create the bucket of an s3:// URL if missing (local stacks and tests)."""
        if not is_s3(check_url(url)):
            return
        bucket, _ = split_s3(url)
        try:
            self._call("stat", url, self.s3.head_bucket, Bucket=bucket)
        except (FileNotFoundError, StorageError):
            self._call("create bucket", url, self.s3.create_bucket, Bucket=bucket)
