"""The nightly's last, optional step: after a promotion, the promoted model scores the night's new
images with the batch-scoring job (`python -m pipeline.score`), configured by `score:`

    score:                               # null (the default): no scoring
      source: s3://incoming/fashion/{date}/          # {date} is the night, YYYY-MM-DD
      output: s3://ml/scores/fashion_mnist/{date}    # default: <root>/scores/<name>/<date>
      args: [--runner, FlinkRunner, ...]             # further pipeline.score / Beam flags
      timeout_seconds: 21600

Re-running a night scores again only if its output has no _summary.json (the job's last write);
a partial output of a killed run is removed first, as the job refuses to mix with one."""
from __future__ import annotations

import json
import subprocess
import sys

from infra.nightly import supervise
from pipeline.dataset.storage import Storage, join


class ScoringFailed(Exception):
    """pipeline.score exited non-zero or ran past its limit; the message says which."""


def output_url(config, date: str) -> str:
    given = (config.raw.get("score") or {}).get("output")
    return given.replace("{date}", date) if given else f"{config.root}/scores/{config.name}/{date}"


def command(config, date: str, model_dir: str) -> list[str]:
    score = config.raw["score"]
    return [sys.executable, "-m", "pipeline.score", "--model", model_dir,
            "--source", str(score["source"]).replace("{date}", date), "--output", output_url(config, date),
            *[str(a).replace("{date}", date) for a in score["args"]]]


def run(storage: Storage, config, date: str, model_dir: str, log=print) -> dict:
    """Score the night's images with `model_dir` unless already done; returns the job's summary."""
    output = output_url(config, date)
    summary_url = join(output, "_summary.json")
    if storage.exists(summary_url):
        log(f"{output} is already scored; not scoring it again")
    else:
        storage.delete_prefix(output)            # what a killed run left: the job would refuse it
        args = command(config, date, model_dir)
        log("nightly: " + " ".join(args[1:]))    # no credentials: config.py refuses them in args
        limit = config.raw["score"]["timeout_seconds"]
        code = subprocess.call(supervise.command_for(args, limit))
        if code == supervise.TIMED_OUT:
            raise ScoringFailed(f"python -m pipeline.score ran past score.timeout_seconds ({limit} s) and was ended")
        if code != 0:
            raise ScoringFailed(f"python -m pipeline.score exited with {code}")
    return {"output": output, **json.loads(storage.read_text(summary_url))}
