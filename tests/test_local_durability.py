"""Local outputs survive a crash of the machine (issue 26, item 16): every shard, checkpoint and
export file is fsynced, and so is the folder it lands in, before the manifest or COMMITTED marker
that names it. No power can be cut here, so the real processes run under strace and the order of
their fsync and rename calls is read from what the kernel was asked."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage
from tests.conftest import ROOT
from tests.helpers import png

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (infra/setup/system.sh)")

QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def traced(command: list[str], trace: str) -> subprocess.CompletedProcess:
    return subprocess.run(["strace", "-f", "--seccomp-bpf", "-qq", "-y", "-s", "512", "-o", trace,
                           "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", *command],
                          cwd=ROOT, text=True, capture_output=True, timeout=600)


def calls(trace: str) -> list[tuple[str, tuple[str, ...]]]:
    """(syscall, its paths) in the order the calls returned: fsync's file from -y, rename's two."""
    found, pending = [], {}
    for line in open(trace):
        pid, _, rest = line.rstrip("\n").partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            # "fsync(11</path> <unfinished ...>": the space before the marker is not part of the call
            pending[pid] = rest[:-len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"<\.\.\. (\w+) resumed>(.*)", rest)
        if resumed:
            rest = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2)
        name = rest.split("(", 1)[0]
        if not rest.rstrip().endswith("= 0"):
            continue
        if name in ("fsync", "fdatasync"):
            fd = re.match(r"\w+\(\d+<(.*)>\)", rest)
            found.append((name, (fd.group(1),) if fd else ()))
        elif name.startswith("rename"):
            found.append(("rename", tuple(QUOTED.findall(rest)[:2])))
    return found


def renamed_to(events, path: str) -> int:
    return max(i for i, (name, paths) in enumerate(events) if name == "rename" and paths[1] == path)


def fsynced(events, path: str, before: int, after: int = -1) -> bool:
    return any(name == "fsync" and paths == (path,) for name, paths in events[after + 1:before])


def test_shards_and_their_folders_are_on_disk_before_the_manifest(tmp_path):
    source, output = tmp_path / "source", str(tmp_path / "out")
    for label in ("cat", "dog"):
        (source / label).mkdir(parents=True)
        for i in range(6):
            (source / label / f"{i}.png").write_bytes(png(28, 28, 1, seed=i + 10 * (label == "dog")))
    trace = str(tmp_path / "trace")
    result = traced([sys.executable, "-m", "pipeline", "--source", str(source), "--output", output,
                     "--num_readers", "2", "--splits", "train:0.5,test:0.5"], trace)
    assert result.returncode == 0, result.stderr[-3000:]
    events = calls(trace)
    manifest = read_manifest(Storage(), output)
    version = os.path.join(output, manifest.version)
    commit = renamed_to(events, os.path.join(output, "manifest.json"))
    version_commit = renamed_to(events, os.path.join(version, "manifest.json"))
    for split in manifest.splits.values():
        for shard in split.shards:
            final = os.path.join(output, shard.file)
            placed = renamed_to(events, final)                # moved from staging into the version
            staged = events[placed][1][0]
            written = renamed_to(events, staged)              # its .partial renamed to its staged name
            assert fsynced(events, events[written][1][0], before=written), f"{shard.file}'s bytes"
            assert placed < version_commit
    last_move = max(renamed_to(events, os.path.join(output, s.file))
                    for split in manifest.splits.values() for s in split.shards)
    assert fsynced(events, version, before=version_commit, after=last_move), "the version folder"
    assert fsynced(events, output, before=commit, after=version_commit), "the dataset folder"
    assert fsynced(events, output, before=len(events), after=commit), "the commit itself"


def test_checkpoint_files_and_folder_are_on_disk_before_the_committed_marker(tmp_path):
    checkpoints, trace = str(tmp_path / "run"), str(tmp_path / "trace")
    script = ("import tensorflow as tf\n"
              "from pipeline.dataset.storage import Storage\n"
              "from trainer.state.checkpoints import CheckpointStore\n"
              f"store = CheckpointStore(Storage(), {checkpoints!r}, {str(tmp_path / 'local')!r})\n"
              "store.save(tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])), 7, {'epoch': 1})\n")
    result = traced([sys.executable, "-c", script], trace)
    assert result.returncode == 0, result.stderr[-3000:]
    events = calls(trace)
    folder = os.path.join(checkpoints, "ckpt-00000007")
    marker = renamed_to(events, os.path.join(folder, "COMMITTED"))
    files = [f for f in os.listdir(folder) if f != "COMMITTED" and not f.startswith(".")]
    assert files
    for name in files:
        placed = renamed_to(events, os.path.join(folder, name))
        assert placed < marker and fsynced(events, events[placed][1][0], before=placed), name
    assert fsynced(events, folder, before=marker, after=max(renamed_to(events, os.path.join(folder, f)) for f in files))
