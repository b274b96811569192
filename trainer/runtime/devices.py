"""Where a rank runs: one GPU per rank, chosen by its local rank, and its share of the CPUs.

Horovod's pattern (its TF2 Keras examples): right after hvd.init() and before the first
TensorFlow op, turn on memory growth (TensorFlow would otherwise reserve nearly all memory of
every GPU it sees) and make only gpus[local_rank] visible, so the ranks on a host use one GPU
each. A host with fewer GPUs than ranks is refused: its ranks would share GPU:0, run out of
memory or make NCCL refuse duplicate devices."""
from __future__ import annotations

import math
import os
import socket

from trainer.errors import UsageError

CGROUP_ROOT = "/sys/fs/cgroup"


def pick_gpu(gpus: list, local_rank: int, local_size: int, host: str):
    """This local rank's GPU out of the host's list (None on a host without GPUs)."""
    if not gpus:
        return None
    if local_size > len(gpus):
        raise UsageError(f"host {host} has {len(gpus)} GPU(s) but {local_size} ranks run on it: run "
                         f"one rank per GPU (horovodrun -H {host}:{len(gpus)}) or use a host with "
                         f"{local_size} GPUs")
    return gpus[local_rank]


def place(local_rank: int, local_size: int) -> str:
    """Make this rank's GPU the only one it sees (memory growth on); returns what it runs on."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    gpu = pick_gpu(gpus, local_rank, local_size, socket.gethostname())
    if gpu is None:
        return "CPU"
    for each in gpus:
        tf.config.experimental.set_memory_growth(each, True)
    tf.config.set_visible_devices(gpu, "GPU")
    return gpu.name.replace("/physical_device:", "")


def cgroup_cpus(root: str = CGROUP_ROOT) -> float | None:
    """The CPU limit of this process's cgroup (a pod's `limits.cpu`), None when unlimited:
    cgroup v2 `cpu.max` ("quota period" or "max period"), else v1 `cpu.cfs_quota_us` /
    `cpu.cfs_period_us`."""
    v2 = os.path.join(root, "cpu.max")
    if os.path.exists(v2):
        with open(v2) as f:
            quota, _, period = f.read().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100000)
    for folder in ("cpu", "cpu,cpuacct"):
        quota_file = os.path.join(root, folder, "cpu.cfs_quota_us")
        if os.path.exists(quota_file):
            with open(quota_file) as f:
                quota = int(f.read().strip())
            with open(os.path.join(root, folder, "cpu.cfs_period_us")) as f:
                period = int(f.read().strip())
            return None if quota <= 0 else quota / period
    return None


def cpu_budget(root: str = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity (taskset, cpusets), capped by the cgroup quota."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpus(root)
    return max(1, min(available, math.ceil(limit)) if limit else available)


def threads_per_rank(local_size: int, override: int | None = None, root: str = CGROUP_ROOT) -> int:
    """Threads for each of the `local_size` ranks on this host (`--threads` wins)."""
    return override or max(1, cpu_budget(root) // max(1, local_size))


def use_threads(threads: int) -> bool:
    """Keep TensorFlow's op pools to this rank's share (before the first op). Returns False when
    TensorFlow already ran in this process (the trainer called as a library after other
    TensorFlow work): its pools are fixed by then and are left as they are."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:          # "cannot be modified after initialization"
        return False
    return True


# Horovod's background thread wakes every HOROVOD_CYCLE_TIME ms to negotiate and fuse the
# tensors that are ready. Its 1 ms default made hvd.init() double the step time on this
# machine's CPUs in 13 of 30 runs of benchmarks/trainer_scaling.py -np 1; 20 ms in 0 of 13.
# Set only when neither the user (HOROVOD_CYCLE_TIME, horovodrun --cycle-time-ms) nor
# Horovod's autotuner (horovodrun --autotune, which tunes it) decides.
DEFAULT_CYCLE_TIME_MS = "20"


def default_cycle_time(environ=os.environ) -> str | None:
    """Set HOROVOD_CYCLE_TIME before hvd.init() unless it is chosen elsewhere; returns what
    was set (None: left alone)."""
    if "HOROVOD_CYCLE_TIME" in environ or environ.get("HOROVOD_AUTOTUNE") == "1":
        return None
    environ["HOROVOD_CYCLE_TIME"] = DEFAULT_CYCLE_TIME_MS
    return DEFAULT_CYCLE_TIME_MS
