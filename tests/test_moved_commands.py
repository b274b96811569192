"""Commands whose modules moved keep their old names for one release (issue 29): the old name
says where the command went, then runs it. Real S3 server (SeaweedFS); for Cassandra, whose
JVM takes a minute to start, the new command's own refusal of a taken port shows it ran."""
import signal
import socket
import subprocess
import sys

from infra.local.processes import free_port
from tests.conftest import ROOT


def test_python_m_infra_s3server_says_where_it_went_and_serves(tmp_path):
    server = subprocess.Popen([sys.executable, "-m", "infra.s3server", "--port", str(free_port()),
                               "--data-dir", str(tmp_path / "data")],
                              cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = server.stdout.readline()          # printed once the server answers
        assert first.startswith("S3 server (SeaweedFS") and "http://127.0.0.1:" in first, first
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert err.splitlines()[0] == ("note: `python -m infra.s3server` is now `python -m infra.local.s3server`; "
                                   "running that (this old name goes away in the next release)"), err


def test_python_m_infra_cassandra_says_where_it_went_and_runs_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "infra.cassandra", "--port", str(port)], cwd=ROOT,
                                text=True, capture_output=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "note: `python -m infra.cassandra` is now `python -m infra.local.cassandra`; running that "
        "(this old name goes away in the next release)",
        f"infra.local.cassandra: error: port {port} is already taken"], result.stderr
