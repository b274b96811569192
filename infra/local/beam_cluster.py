"""A local Beam cluster for the ingestion job's portable path: Beam's job service (with our
worker-count patch: infra/local/job_service.py) and an SDK worker pool (infra/local/worker_pool.py),
the parts of Beam on Flink in k8s/ but Flink. The job runs outside the launcher's process tree.

    eval "$(python -m infra.stack env)"                      # the workers' S3 endpoint and keys
    python -m infra.local.beam_cluster up                     # in the background; prints the flags
    python -m pipeline --source s3://... --output s3://... $(python -m infra.local.beam_cluster flags)
    python -m infra.local.beam_cluster down

The worker pool's SDK workers get the environment `up` was started with, and nothing else: S3
endpoint and credentials reach them there, as on a Flink task manager, never on a command line.
With --hosts hostA,hostB (the network namespaces of `python -m infra.local.hosts up`) the job
service runs on hostA and a worker pool on hostB (on each host after the first); run the job on
hostA then (`python -m infra.local.hosts run hostA -- python -m pipeline ...`), with an S3
endpoint hostB can reach. Ports are free ones, the job service listens on localhost and a
worker pool on one address (127.0.0.1, or its host's). Logs, the ports and cluster.json (the
state) are in --state-dir; the SDK workers' warnings and tracebacks are in the worker pool's log."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from infra.local.processes import PROJECT, child_env, children
from infra.local.s3server import dies_with_parent

DEFAULT_STATE_DIR = os.path.join("runs", "beam-cluster")


class BeamCluster:
    """The job service and worker pool(s) as child processes that die with this one.

    Args:
        log_dir: their logs and port files.
        hosts: None (everything on this machine), or infra.local.hosts' Hosts: the job service
            on the first, a worker pool on each of the others.
        env: the environment of all of them (default: this process's); the SDK workers inherit it.
        bind: the worker pool's address when it runs on this machine.
        worker_connect_timeout: seconds an SDK worker may take to connect before its job fails
            (default: infra/local/job_service.py's).
    """

    def __init__(self, log_dir: str, hosts=None, env: dict | None = None, bind: str = "127.0.0.1",
                 worker_connect_timeout: float | None = None):
        self.log_dir, self.hosts, self.bind = os.path.abspath(log_dir), hosts, bind
        self.job_service_args = (["--worker-connect-timeout", str(worker_connect_timeout)]
                                 if worker_connect_timeout else [])
        self.env = child_env(os.environ if env is None else env)
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 60.0) -> "BeamCluster":
        os.makedirs(self.log_dir, exist_ok=True)
        try:
            self._spawn("job-service", "infra.local.job_service", self.job_service_args,
                        self.hosts[0] if self.hosts else None)
            for name, host, bind in self._pools():
                self._spawn(name, "infra.local.worker_pool", ["--bind", bind], host)
            for name in self.processes:
                self.ports[name] = self._wait_for_port(name, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _pools(self) -> list[tuple]:
        """(name, host or None, address to listen on) of each worker pool."""
        if not self.hosts:
            return [("worker-pool", None, self.bind)]
        return [(f"worker-pool-{h.name}", h, h.address) for h in self.hosts[1:]]

    def _spawn(self, name: str, module: str, args: list[str], host) -> None:
        port_file = self.path(f"{name}.port")
        with contextlib.suppress(FileNotFoundError):
            os.remove(port_file)
        argv = [sys.executable, "-m", module, *args, "--port-file", port_file]
        with open(self.path(f"{name}.log"), "ab") as log:
            self.processes[name] = subprocess.Popen(
                dies_with_parent(host.command(argv) if host else argv), env=self.env, cwd=PROJECT,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _wait_for_port(self, name: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError, ValueError):
                with open(self.path(f"{name}.port")) as f:
                    return int(f.read())
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.processes[name].returncode}; see "
                                   f"{self.path(name + '.log')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start within {timeout:.0f} s; see "
                                   f"{self.path(name + '.log')}")
            time.sleep(0.1)

    def path(self, name: str) -> str:
        return os.path.join(self.log_dir, name)

    @property
    def job_endpoint(self) -> str:
        """Where the launcher reaches the job service (on the job service's host)."""
        return f"localhost:{self.ports['job-service']}"

    @property
    def worker_pools(self) -> list[str]:
        """Where the job service reaches each worker pool."""
        return [f"{host.name if host else bind}:{self.ports[name]}" for name, host, bind in self._pools()]

    def flags(self) -> list[str]:
        """`python -m pipeline`'s flags for this cluster (its first worker pool: Beam's local job
        service asks one EXTERNAL endpoint for all of a job's workers)."""
        return ["--runner", "PortableRunner", "--job_endpoint", self.job_endpoint,
                "--environment_type", "EXTERNAL", "--environment_config", self.worker_pools[0]]

    def logs(self) -> dict[str, str]:
        return {name: self.path(f"{name}.log") for name in self.processes}

    def sdk_workers(self) -> list[int]:
        """The pids of the SDK worker processes the worker pools are running now."""
        return [child for name, p in self.processes.items() if name.startswith("worker-pool")
                for child in children(p.pid)]

    def alive(self) -> bool:
        return bool(self.processes) and all(p.poll() is None for p in self.processes.values())

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> "BeamCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the command: up / serve / flags / status / down ------------------------------------------
def state_path(state_dir: str) -> str:
    return os.path.join(state_dir, "cluster.json")


def read_state(state_dir: str) -> dict | None:
    """cluster.json, if the process that wrote it still runs."""
    try:
        with open(state_path(state_dir)) as f:
            state = json.load(f)
        os.kill(state["pid"], 0)
    except (OSError, ValueError):           # no file, or ProcessLookupError: a stale one
        return None
    return state


def named_hosts(names: str | None, prefix: str) -> list | None:
    """--hosts hostA,hostB as infra.local.hosts' Hosts; each must have been made (`hosts up`)."""
    if not names:
        return None
    from infra.local import hosts

    known = {h.name: h for h in hosts.hosts(prefix)}
    picked = [known.get(name.strip()) for name in names.split(",")]
    if None in picked or len(picked) < 2:
        raise SystemExit(f"beam cluster: error: --hosts {names}: name the job service's host, then "
                         f"the worker pools' (of {', '.join(known)})")
    for host in picked:
        if not os.path.exists(f"/run/netns/{host.namespace}"):
            raise SystemExit(f"beam cluster: error: no host {host.name} (network namespace "
                             f"{host.namespace}): run `python -m infra.local.hosts up` first")
    return picked


def serve(args) -> int:
    """The foreground owner of the processes (what `up` starts): writes cluster.json, then waits
    for SIGTERM or for one of them to die, and stops the others (then removes cluster.json)."""
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))
    try:
        with BeamCluster(args.state_dir, named_hosts(args.hosts, args.hosts_prefix), bind=args.bind) as cluster:
            state = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "job_endpoint": cluster.job_endpoint, "worker_pools": cluster.worker_pools,
                     "flags": cluster.flags(), "logs": cluster.logs(),
                     "launcher_host": cluster.hosts[0].name if cluster.hosts else None}
            with open(state_path(args.state_dir) + ".tmp", "w") as f:
                json.dump(state, f, indent=2)
            os.replace(state_path(args.state_dir) + ".tmp", state_path(args.state_dir))
            while not stopping and cluster.alive():
                time.sleep(0.5)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(state_path(args.state_dir))
    return 0 if stopping else 1


def up(args) -> int:
    if read_state(args.state_dir):
        print(f"beam cluster: already up; {describe(read_state(args.state_dir))}")
        return 0
    named_hosts(args.hosts, args.hosts_prefix)               # a bad --hosts fails here, not in the log
    os.makedirs(args.state_dir, exist_ok=True)
    command = [sys.executable, "-m", "infra.local.beam_cluster", "--state-dir", args.state_dir, "serve",
               "--bind", args.bind, "--hosts-prefix", args.hosts_prefix] + \
        (["--hosts", args.hosts] if args.hosts else [])
    with open(os.path.join(args.state_dir, "cluster.log"), "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=child_env(os.environ))   # outlives `up`
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and process.poll() is None:
        state = read_state(args.state_dir)
        if state and state["pid"] == process.pid:
            print(f"beam cluster: up (pid {process.pid}); {describe(state)}")
            return 0
        time.sleep(0.2)
    print(f"beam cluster: error: did not come up; see {os.path.join(args.state_dir, 'cluster.log')}",
          file=sys.stderr)
    if process.poll() is None:
        process.terminate()
    return 1


def describe(state: dict) -> str:
    where = f"on {state['launcher_host']}: " if state["launcher_host"] else ""
    logs = ", ".join(f"{name} {path}" for name, path in state["logs"].items())
    return (f"job service {state['job_endpoint']}, worker pool(s) {', '.join(state['worker_pools'])}\n"
            f"  run the job {where}python -m pipeline ... {' '.join(state['flags'])}\n  logs: {logs}")


def flags(args) -> int:
    state = read_state(args.state_dir)
    print(" ".join(state["flags"]) if state else "beam cluster: not running (python -m "
          "infra.local.beam_cluster up)", file=sys.stdout if state else sys.stderr)
    return 0 if state else 3


def status(args) -> int:
    state = read_state(args.state_dir)
    print(f"beam cluster: up since {state['started']} (pid {state['pid']}); {describe(state)}"
          if state else "beam cluster: not running")
    return 0 if state else 3


def down(args) -> int:
    state = read_state(args.state_dir)
    if not state:
        print("beam cluster: not running")
        return 0
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and read_state(args.state_dir):
        time.sleep(0.2)
    if read_state(args.state_dir):
        print(f"beam cluster: error: pid {state['pid']} did not stop within {args.timeout:.0f} s",
              file=sys.stderr)
        return 1
    print(f"beam cluster: down (pid {state['pid']} stopped)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.local.beam_cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="cluster.json, logs, ports "
                   "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for up/down")
    commands = p.add_subparsers(dest="command", required=True)
    for name, text in (("up", "start it in the background and print the job's flags"),
                       ("serve", "run it in the foreground (what up starts)")):
        c = commands.add_parser(name, help=text)
        c.add_argument("--hosts", help="JOB_SERVICE_HOST,WORKER_HOST[,...] of `python -m "
                       "infra.local.hosts up`, e.g. hostA,hostB (default: all on this machine)")
        c.add_argument("--hosts-prefix", default="", help="their namespaces' prefix (default: none)")
        c.add_argument("--bind", default="127.0.0.1", help="the worker pool's address without "
                       "--hosts (default: %(default)s; never all addresses)")
    commands.add_parser("flags", help="print the flags `python -m pipeline` needs for it")
    commands.add_parser("status", help="is it up? (exit 0 yes, 3 no)")
    commands.add_parser("down", help="stop it")
    args = p.parse_args(argv)
    return {"up": up, "serve": serve, "flags": flags, "status": status, "down": down}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
