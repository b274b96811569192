"""A local S3-compatible server (moto's server: real S3 over HTTP) on 127.0.0.1.

    python -m infra.local.s3server [--port 9000] [--data-dir D] [--check-credentials]
                                                       # foreground, Ctrl-C stops it

By default it keeps everything in memory; with a data directory the buckets outlive a restart
(infra/local/s3persist.py). By default it accepts any credentials. With check_credentials it checks them as AWS does
(signature and access key, through moto's IAM): it creates one IAM user with an access key that
may do everything, then switches authentication on (moto's /moto-api/reset-auth, the
server-mode form of INITIAL_NO_AUTH_ACTION_COUNT), and `env()` hands out that key.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

# Dummy credentials: the local server accepts any; real runs use boto3's credential chain.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local-access-key",
                     "AWS_SECRET_ACCESS_KEY": "local-secret-key",
                     "AWS_DEFAULT_REGION": "us-east-1"}


def dies_with_parent(command: list[str]) -> list[str]:
    """Linux: prefix `command` so the server gets SIGTERM when the process that started it dies
    (even by kill -9), so a crashed test run or demo never leaves a server behind.

    setpriv sets the parent-death signal and then execs the command. A Python `preexec_fn` would do
    the same, but it makes subprocess fork the whole interpreter and run every library's fork
    handlers; gRPC's (loaded by Beam) aborted such a child before it could exec (SIGABRT, seen in CI)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalS3:
    """Start/stop a moto S3 server in its own process; `env()` points boto3 at it."""

    def __init__(self, port: int = 0, log_path: str | None = None, check_credentials: bool = False,
                 data_dir: str | None = None):
        self.port = port or free_port()
        self.data_dir = data_dir
        self.log_path = log_path or os.devnull
        self.process: subprocess.Popen | None = None
        self.check_credentials = check_credentials
        self.credentials = dict(LOCAL_CREDENTIALS)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        return {**self.credentials, "AWS_ENDPOINT_URL_S3": self.endpoint_url}

    def start(self, timeout: float = 30.0) -> "LocalS3":
        log = open(self.log_path, "ab")
        server = (["infra.local.s3persist", "--data-dir", os.path.abspath(self.data_dir)]
                  if self.data_dir else ["moto.server"])
        self.process = subprocess.Popen(
            dies_with_parent([sys.executable, "-m", *server, "-H", "127.0.0.1", "-p", str(self.port)]),
            stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"S3 server exited with {self.process.returncode}; see {self.log_path}")
            try:
                urllib.request.urlopen(self.endpoint_url + "/", timeout=1).read()
            except OSError:
                time.sleep(0.2)
                continue
            if self.check_credentials:
                self._require_credentials()
            return self
        self.stop()
        raise RuntimeError(f"S3 server did not answer on {self.endpoint_url} within {timeout:.0f} s")

    def _require_credentials(self) -> None:
        """One IAM user allowed everything, its key in `credentials`; then auth is on."""
        import json

        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="local")
        iam.put_user_policy(UserName="local", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="local")["AccessKey"]
        self.credentials.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"],
                                AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        request = urllib.request.Request(self.endpoint_url + "/moto-api/reset-auth", data=b"0",
                                         method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()      # from now on every call is checked

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.s3server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--data-dir", help="keep the buckets in this directory across restarts "
                        "(default: in memory only)")
    parser.add_argument("--check-credentials", action="store_true",
                        help="refuse requests not signed with the key printed below")
    args = parser.parse_args(argv)
    with LocalS3(args.port, check_credentials=args.check_credentials, data_dir=args.data_dir) as server:
        kept = f"buckets kept in {args.data_dir}" if args.data_dir else "in memory only"
        print(f"S3 server on {server.endpoint_url} ({kept}); export:")
        for k, v in server.env().items():
            print(f"  export {k}={v}")
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
