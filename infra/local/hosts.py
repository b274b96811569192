"""Two test hosts on this machine: hostA and hostB, each a network namespace with its own address,
hostname, /etc/hosts and sshd, joined by one veth pair. Nothing else is reachable from them but
their own loopback, so `horovodrun -H hostA:1,hostB:1` really goes through ssh and a network
interface, as it does between two nodes (docs/two-hosts.md).

    python -m infra.local.hosts up                  # namespaces, veth, keys, sshd in each
    python -m infra.local.hosts run hostA -- horovodrun -np 2 -H hostA:1,hostB:1 ...
    python -m infra.local.hosts down                # processes, sshd, namespaces, files: gone

Each host's configuration lives in /etc/netns/<namespace>/ (hosts, hostname, ssh/), which
`ip netns exec` bind-mounts over /etc/ inside the namespace (ip-netns(8)): the machine's own
/etc/hosts, /etc/ssh and ~/.ssh are never touched. Needs root, iproute2 and openssh-server
(infra/setup/system.sh installs them)."""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

INTERFACE = "veth0"           # one name on both hosts (as eth0 on real nodes): one --network-interface
SUBNET = "10.99.0"            # private, and only ever inside the two namespaces
ETC_NETNS = "/etc/netns"
SSHD = "/usr/sbin/sshd"       # sshd re-executes itself for each connection: an absolute path


class NamespacesRefused(RuntimeError):
    """The kernel (or a container's policy) does not let this process create network namespaces."""


class HostsExist(RuntimeError):
    """The namespaces are there already (an earlier `up`): they are left as they are."""


@dataclass(frozen=True)
class Host:
    name: str                 # its hostname, and what the other host calls it
    address: str
    namespace: str

    @property
    def etc(self) -> str:
        """The files `ip netns exec` shows as /etc/<file> inside this host."""
        return os.path.join(ETC_NETNS, self.namespace)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run on this host: in its namespace (network, /etc files) under its own hostname."""
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *argv]

    def pids(self) -> list[int]:
        """Every process in this host's network namespace (all of them started through it)."""
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True)
        return [int(pid) for pid in listed.stdout.split()]


def hosts(prefix: str = "") -> list[Host]:
    """hostA and hostB; `prefix` names their namespaces apart (the tests' never meet a user's)."""
    return [Host(name, f"{SUBNET}.{i}", prefix + name) for i, name in enumerate(("hostA", "hostB"), 1)]


def up(pair: list[Host]) -> None:
    """Create both hosts and start sshd in each; returns once each can ssh into the other."""
    check_tools()
    for host in pair:
        add_namespace(host.namespace)
    a, b = pair
    ip("link", "add", INTERFACE, "netns", a.namespace, "type", "veth",
       "peer", "name", INTERFACE, "netns", b.namespace)
    for host in pair:
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", INTERFACE)
        ip("-n", host.namespace, "link", "set", INTERFACE, "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
    write_etc(pair)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)     # sshd's privilege-separation directory
    for host in pair:
        start_sshd(host)
    for here, there in (pair, pair[::-1]):
        wait_for_ssh(here, there)


def down(pair: list[Host]) -> None:
    """Remove both hosts whatever state they are in: their processes, namespaces (the veth goes
    with them) and files. Safe to call on hosts that are half made or already gone."""
    for host in pair:
        kill_all(host)
        subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
        shutil.rmtree(host.etc, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(ETC_NETNS)                  # if we made it and nothing else lives there


@contextlib.contextmanager
def running(prefix: str = "pytest-"):
    """hostA and hostB for the length of a `with` block, removed even when the block fails.
    Hosts left behind by a run that was killed before its clean-up are removed first."""
    pair = hosts(prefix)
    down(pair)
    try:
        up(pair)
        yield pair
    finally:
        down(pair)


def check_tools() -> None:
    # No root check of our own: without it `ip netns add` fails, which is NamespacesRefused.
    missing = [tool for tool in ("ip", "unshare", "ssh", "ssh-keygen", SSHD) if not shutil.which(tool)]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: run `make setup` (infra/setup/system.sh "
                           f"installs iproute2 and openssh-server)")


def add_namespace(name: str) -> None:
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode == 0:
        return
    if "File exists" in made.stderr:
        raise HostsExist(f"network namespace {name} exists already: `python -m infra.local.hosts down` first")
    raise NamespacesRefused(f"ip netns add {name}: {made.stderr.strip()}")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def write_etc(pair: list[Host]) -> None:
    """Per host: /etc/hosts naming both hosts, /etc/hostname, and /etc/ssh with a host key, the
    shared client key, its authorized_keys and a known_hosts that holds the real host keys (so
    host keys are checked, and nothing is written to ~/.ssh)."""
    for host in pair:
        os.makedirs(os.path.join(host.etc, "ssh"), mode=0o700)
        keygen(os.path.join(host.etc, "ssh", "ssh_host_ed25519_key"), f"root@{host.name}")
    client = os.path.join(pair[0].etc, "ssh", "id_ed25519")
    keygen(client, "horovodrun")
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in pair)
    known = "".join(f"{h.name},{h.address} {read_key(h)}\n" for h in pair)
    for host in pair:
        ssh = os.path.join(host.etc, "ssh")
        if host is not pair[0]:
            shutil.copy(client, os.path.join(ssh, "id_ed25519"))
        write(os.path.join(host.etc, "hosts"), hosts_file)
        write(os.path.join(host.etc, "hostname"), f"{host.name}\n")
        write(os.path.join(ssh, "known_hosts"), known)
        shutil.copy(f"{client}.pub", os.path.join(ssh, "authorized_keys"))
        write(os.path.join(ssh, "sshd_config"), sshd_config(host))
        write(os.path.join(ssh, "ssh_config"), SSH_CONFIG)


def sshd_config(host: Host) -> str:
    return (f"ListenAddress {host.address}\nPort 22\n"
            "HostKey /etc/ssh/ssh_host_ed25519_key\n"
            "AuthorizedKeysFile /etc/ssh/authorized_keys\n"
            "PermitRootLogin prohibit-password\n"             # root, by key only
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PidFile /etc/ssh/sshd.pid\n"                     # not /run/sshd.pid: one per host
            "PrintMotd no\nMaxStartups 64\n"                  # horovodrun opens several at once
            # Gloo's launcher (our Horovod patch) sends secrets by SendEnv, never on the command line.
            "AcceptEnv *SECRET* *PASSWORD* *PASSWD* *TOKEN* *CREDENTIAL* *PRIVATE*\n")


# What horovodrun and mpirun's ssh read inside the namespaces (they take no -F).
SSH_CONFIG = """Host *
    User root
    IdentityFile /etc/ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile /etc/ssh/known_hosts
    GlobalKnownHostsFile /etc/ssh/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    LogLevel ERROR
"""


def keygen(path: str, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True, capture_output=True)


def read_key(host: Host) -> str:
    with open(os.path.join(host.etc, "ssh", "ssh_host_ed25519_key.pub")) as f:
        return " ".join(f.read().split()[:2])


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def start_sshd(host: Host) -> None:
    """sshd in the foreground of its own session (it outlives `up`); its log beside its keys."""
    log = open(os.path.join(host.etc, "ssh", "sshd.log"), "ab")
    subprocess.Popen(host.command([SSHD, "-D", "-e", "-f", "/etc/ssh/sshd_config"]),
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()


def wait_for_ssh(here: Host, there: Host, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run(here.command(["ssh", there.name, "hostname"]), capture_output=True,
                               text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() == there.name:
            return
        if time.monotonic() > deadline:
            with open(os.path.join(there.etc, "ssh", "sshd.log")) as f:
                log = f.read()[-2000:]
            raise RuntimeError(f"ssh {here.name} -> {there.name} failed: {probe.stderr.strip()}\n"
                               f"sshd on {there.name}:\n{log}")
        time.sleep(0.2)


def kill_all(host: Host, timeout: float = 10) -> None:
    """SIGKILL every process in the host's namespace (sshd, sessions, trainers) and wait for them."""
    deadline = time.monotonic() + timeout
    while pids := host.pids():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes in {host.namespace} outlived SIGKILL: {pids}")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prefix", default="", help="prefix of the namespace names (default: none, "
                   "namespaces hostA and hostB)")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("up", help="create hostA and hostB and start sshd in each")
    sub.add_parser("down", help="stop everything in them and remove them")
    run = sub.add_parser("run", help="run a command on one host: run hostA -- COMMAND ...")
    run.add_argument("host", choices=("hostA", "hostB"))
    run.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    pair = hosts(a.prefix)
    if a.action == "up":
        try:
            up(pair)
        except HostsExist as there:
            print(f"hosts: {there}", file=sys.stderr)
            return 1
        except RuntimeError as failed:           # NamespacesRefused too: one line, nothing left behind
            down(pair)
            print(f"hosts: {failed}", file=sys.stderr)
            return 1
        for host in pair:
            print(f"{host.name} {host.address} (namespace {host.namespace}, interface {INTERFACE}, sshd on :22)")
        return 0
    if a.action == "down":
        down(pair)
        return 0
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        p.error("run: no command")
    host = next(h for h in pair if h.name == a.host)
    os.execvp("ip", host.command(command))


if __name__ == "__main__":
    sys.exit(main())
