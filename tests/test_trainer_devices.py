"""Where a rank runs: its GPU (picked from a device list: no GPU exists on this machine, so the
lists here are built by hand, as TensorFlow would report them on a 2-GPU and a 4-GPU host), its
CPU budget from a cgroup folder written here (standing in for /sys/fs/cgroup), its batches."""
import collections

import pytest

from trainer.config import TrainConfig
from trainer.errors import UsageError
from trainer.flags import parser
from trainer.input.batching import plan_batches
from trainer.runtime import devices

Device = collections.namedtuple("PhysicalDevice", "name device_type")   # tf.config's shape
FOUR = [Device(f"/physical_device:GPU:{i}", "GPU") for i in range(4)]


def test_each_local_rank_gets_its_own_gpu():
    assert [devices.pick_gpu(FOUR, r, 4, "host1").name for r in range(4)] == [d.name for d in FOUR]
    assert devices.pick_gpu(FOUR[:2], 1, 2, "host1") is FOUR[1]


def test_a_cpu_only_host_gets_no_gpu():
    assert devices.pick_gpu([], 0, 2, "host1") is None


def test_fewer_gpus_than_ranks_names_the_host_and_both_numbers():
    with pytest.raises(UsageError) as error:
        devices.pick_gpu(FOUR[:2], 3, 4, "host1")      # horovodrun -np 8 -H host1:4,... on 2 GPUs
    assert "host host1 has 2 GPU(s) but 4 ranks run on it" in str(error.value)
    assert "-H host1:2" in str(error.value)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_caps_the_threads(tmp_path):
    write(tmp_path / "cpu.max", "400000 100000\n")                   # limits.cpu: 4
    assert devices.cgroup_cpus(str(tmp_path)) == 4
    budget = devices.cpu_budget(str(tmp_path))
    assert budget == min(4, len(__import__("os").sched_getaffinity(0)))
    assert devices.threads_per_rank(2, root=str(tmp_path)) == max(1, budget // 2)
    assert devices.threads_per_rank(2, override=3, root=str(tmp_path)) == 3


def test_cgroup_v2_without_a_limit_and_v1_quota(tmp_path):
    write(tmp_path / "v2" / "cpu.max", "max 100000\n")
    assert devices.cgroup_cpus(str(tmp_path / "v2")) is None
    write(tmp_path / "v1" / "cpu,cpuacct" / "cpu.cfs_quota_us", "150000\n")
    write(tmp_path / "v1" / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert devices.cgroup_cpus(str(tmp_path / "v1")) == 1.5
    write(tmp_path / "v1u" / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "v1u" / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert devices.cgroup_cpus(str(tmp_path / "v1u")) is None


def test_a_pod_limited_to_16_cpus_on_a_128_core_node_gives_4_threads_to_each_of_4_ranks(tmp_path, monkeypatch):
    write(tmp_path / "cpu.max", "1600000 100000\n")
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: set(range(128)))
    assert devices.threads_per_rank(4, root=str(tmp_path)) == 4


def test_accumulation_keeps_whole_updates_per_epoch():
    plan = plan_batches(1000, size=2, batch_size=8, accumulate=2)
    assert (plan.global_batch, plan.per_rank, plan.updates_per_epoch, plan.steps_per_epoch) == (32, 8, 31, 62)
    same = plan_batches(1000, size=2, batch_size=16)
    assert same.updates_per_epoch == plan.updates_per_epoch and same.per_rank == 16
    with pytest.raises(UsageError, match="fewer than one global batch"):
        plan_batches(20, size=2, batch_size=8, accumulate=2)


def test_local_folders_are_per_job_and_rank():
    a = TrainConfig.from_args(parser().parse_args(["--dataset", "d", "--checkpoint-dir", "s3://m/run-1"]))
    b = TrainConfig.from_args(parser().parse_args(["--dataset", "d", "--checkpoint-dir", "s3://m/run-2"]))
    assert a.local_dir(0, "checkpoints") != b.local_dir(0, "checkpoints")
    assert a.local_dir(0) != a.local_dir(1)
    # Under the per-user cache (0700), not a shared /tmp folder another user could plant.
    assert a.local_dir(1, "export").startswith(f"{a.inputs.cache_dir}/jobs/m-run-1-")
    assert a.local_dir(1, "export").endswith("/rank-1/export") and not a.inputs.cache_dir.startswith("/tmp/")


@pytest.mark.parametrize("flags, words", [
    (["--accumulate", "2", "--checkpoint-every", "3"], "--checkpoint-every 3 must be a multiple of --accumulate 2"),
    (["--precision", "float16"], "invalid choice: 'float16'"),
])
def test_bad_numeric_combinations_are_one_line(flags, words):
    # A process of its own, as a user runs it: in pytest's process hvd.init() would start an MPI
    # singleton whose OMPI_* variables every later mpirun of the session inherits (and fails on).
    from tests.conftest import run_cli
    result = run_cli(["trainer", "--dataset", "/nonexistent", "--checkpoint-dir", "/tmp/x", *flags])
    assert result.returncode == 2, result.stderr[-2000:]
    assert words in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow        # minutes of end-to-end training: `make test-all` runs it (README)
def test_the_gpu_check_script_runs_its_cpu_fallback(dataset):
    """benchmarks/gpu_check.py on CPU slots (no GPU here): real horovodrun -np 1 and -np 2, synthetic
    and real shards; only that the script works is checked, its figures mean nothing for a GPU."""
    from tests.conftest import run_cli
    result = run_cli(["benchmarks.gpu_check", "--device", "cpu", "--model", "cnn", "--image-size", "32",
                      "--batch-size", "8", "--steps", "3", "--warmup", "2", "--dataset", dataset,
                      "--precisions", "float32"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [(r[0], r[1]) for r in rows] == [("1", "float32"), ("2", "float32")]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 and float(r[4]) > 0 for r in rows)
