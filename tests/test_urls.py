"""Honest URLs and credentials: schemes nothing here can serve are refused with one line, local
paths are refused for a cluster runner, and Beam's --s3_* flags reach every worker's client and
are never printed, checked against a real S3 server that checks credentials."""
import pytest

from infra.local.s3server import LocalS3
from pipeline.dataset.storage import S3Settings, Storage, StorageError, join
from pipeline.plan import UsageError, tls_verify
from tests.conftest import run_cli
from tests.test_cli_errors import one_clear_line
from tests.helpers import png


@pytest.mark.parametrize("flag, url", [
    ("--output", "gs://bucket/datasets/x"),
    ("--output", "hdfs://namenode:8020/datasets/x"),
    ("--source", "gs://bucket/images"),
    ("--labels_file", "hdfs://namenode/labels.csv"),
])
def test_other_schemes_are_refused_with_one_line_naming_the_url(tmp_path, flag, url):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "1.png").write_bytes(png(8, 8, 1))
    args = {"--source": str(tmp_path / "images"), "--output": str(tmp_path / "out"), flag: url}
    result = run_cli(["pipeline", *[x for pair in args.items() for x in pair]])
    assert result.returncode == 2
    one_clear_line(result, url, "is not supported", "s3://")
    assert not (tmp_path / "gs:").exists() and not (tmp_path / "hdfs:").exists()


def test_storage_itself_refuses_other_schemes():
    for call in (lambda s: s.exists("gs://b/k"), lambda s: s.read_bytes("hdfs://n/k"),
                 lambda s: s.write_bytes("gs://b/k", b"x"), lambda s: list(s.list("gs://b/p"))):
        with pytest.raises(StorageError, match="is not supported"):
            call(Storage())


@pytest.mark.parametrize("local", ["--output", "--source"])
def test_a_local_path_with_a_cluster_runner_is_refused(s3, fmnist, tmp_path, local):
    args = {"--source": fmnist["images"], "--labels_file": fmnist["labels"],
            "--output": "s3://fmnist/datasets/never"}
    args[local] = str(tmp_path / ("out" if local == "--output" else "images"))
    if local == "--source":
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / "1.png").write_bytes(png(8, 8, 1))
        del args["--labels_file"]
    result = run_cli(["pipeline", *[x for pair in args.items() for x in pair],
                      "--runner", "FlinkRunner", "--flink_master", "flink-jobmanager:8081"])
    last = one_clear_line(result, args[local], "local path", "--runner FlinkRunner", "--shared_filesystem")
    assert result.returncode == 2, last


def test_tls_verify_flag():
    assert tls_verify(None) is None and tls_verify("true") is None and tls_verify("False") is False
    with pytest.raises(UsageError, match="no such CA bundle"):
        tls_verify("/nonexistent/ca.pem")


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """A second S3 server that checks credentials as AWS does; 12 images and labels in it."""
    server = LocalS3(log_path=str(tmp_path_factory.mktemp("s3-auth") / "server.log"),
                     check_credentials=True).start()
    good = Storage(settings=S3Settings(endpoint_url=server.endpoint_url,
                                       access_key_id=server.credentials["AWS_ACCESS_KEY_ID"],
                                       secret_access_key=server.credentials["AWS_SECRET_ACCESS_KEY"]))
    good.ensure_bucket("s3://checked")
    for i in range(12):
        good.write_bytes(f"s3://checked/raw/{'ab'[i % 2]}/{i}.png", png(8, 8, 1, seed=i))
    yield server
    server.stop()


WRONG_KEY = "AKIAWRONGKEY0000TEST"


def ingest_from(server, *flags):
    # The environment holds dummy credentials the server refuses: only the flags can work.
    env = {"AWS_ENDPOINT_URL_S3": server.endpoint_url, "AWS_ACCESS_KEY_ID": "dummy-env-key",
           "AWS_SECRET_ACCESS_KEY": "dummy-env-secret"}
    return run_cli(["pipeline", "--source", "s3://checked/raw", "--output", "s3://checked/ds",
                    "--num_readers", "1", "--overwrite", *flags], env=env)


def test_a_wrong_access_key_fails_with_one_line_that_does_not_print_it(checked):
    secret = checked.credentials["AWS_SECRET_ACCESS_KEY"]
    result = ingest_from(checked, "--s3_access_key_id", WRONG_KEY, "--s3_secret_access_key", secret)
    assert result.returncode == 2
    one_clear_line(result, "s3://checked/raw", "refused these credentials")
    assert WRONG_KEY not in result.stdout + result.stderr
    assert secret not in result.stdout + result.stderr


def test_s3_flags_reach_every_worker_and_are_never_printed(checked):
    key, secret = (checked.credentials[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    result = ingest_from(checked, "--s3_access_key_id", key, "--s3_secret_access_key", secret,
                         "--direct_num_workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "published ds" in result.stdout and "12 images" in result.stdout
    assert key not in result.stdout + result.stderr and secret not in result.stdout + result.stderr
    assert repr(Storage(settings=S3Settings(access_key_id=key, secret_access_key=secret))).count(secret) == 0


def test_join_keeps_one_slash_between_parts():
    assert join("s3://x", "y") == "s3://x/y"
    assert join("s3://x/", "/y") == "s3://x/y"
