"""One night of one model: the steps (ingest, check data, train, evaluate, promote; after a
promotion, score when configured), each recorded in the run report; exit codes and the
report's status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

from infra.nightly import datacheck, evaluate, launch, promote, scoring, supervise
from infra.nightly.lock import LockLost, NightlyLock
from pipeline.dataset.manifest import DatasetNotFound, read_manifest
from pipeline.dataset.naming import MANIFEST_NAME
from pipeline.dataset.storage import Storage, StorageError, join


PROMOTED, FAILED, USAGE, NOT_PROMOTED, LOCKED, BAD_DATA = 0, 1, 2, 3, 4, 5
STATUS = {PROMOTED: "promoted", NOT_PROMOTED: "not_promoted", FAILED: "failed",
          BAD_DATA: "data_check_failed"}


class StepFailed(Exception):
    """A step of the night failed; the message names the step and the cause."""


def say(line: str) -> None:
    print(line, flush=True)


class Night:
    """One night's run for one model; each method is a step and records what it did."""

    def __init__(self, config, date: str, storage: Storage, cache_dir: str):
        self.config, self.date, self.storage, self.cache_dir = config, date, storage, cache_dir
        self.run_id = f"{date}-{uuid.uuid4().hex[:8]}"
        self.report = {"name": config.name, "date": date, "run_id": self.run_id,
                       "started": now(), "durations_s": {}}

    @property
    def report_url(self) -> str:
        return join(self.config.models_url, "runs", f"{self.date}.json")

    def timed(self, step: str, fn, *args):
        say(f"\n== nightly {self.config.name} {self.date}: {step}")
        started = time.monotonic()
        try:
            return fn(*args)
        except (StepFailed, LockLost, promote.PointerMoved):
            raise
        except (StorageError, OSError, ValueError, launch.TrainingFailed, scoring.ScoringFailed) as e:
            raise StepFailed(f"{step}: {e}") from None
        except Exception as e:            # anything else still ends as a failed night with a report
            raise StepFailed(f"{step}: {type(e).__name__}: {e}") from e
        finally:
            self.report["durations_s"][step] = round(time.monotonic() - started, 1)

    # -- steps -------------------------------------------------------------------------------
    def finished_before(self) -> dict | None:
        try:
            previous = json.loads(self.storage.read_text(self.report_url))
        except FileNotFoundError:
            return None
        return previous if previous.get("status") in ("promoted", "not_promoted") else None

    def ingest(self) -> None:
        span = self.config.span_url(self.date)
        published = self.storage.exists(join(span, MANIFEST_NAME))
        if published:
            say(f"span {span} is already published; not ingesting it again")
        else:
            ingest = self.config.raw["ingest"]
            # The pipeline publishes at <output>/<span> and fills {span} in its inputs itself.
            command = [sys.executable, "-m", "pipeline", "--output", self.config.datasets_url,
                       "--span", self.date, "--name", self.config.name, "--splits", ingest["splits"]]
            for flag in ("source", "labels_file", "classes"):
                if ingest.get(flag):
                    command += [f"--{flag}", str(ingest[flag]).replace("{date}", self.date)]
            command += [str(a).replace("{date}", self.date) for a in ingest["args"]]
            say("nightly: " + " ".join(command[1:]))     # no credentials: config.py refuses them
            limit = ingest["timeout_seconds"]
            code = subprocess.call(supervise.command_for(command, limit))
            if code == supervise.TIMED_OUT:
                raise StepFailed(f"ingest: python -m pipeline ran past ingest.timeout_seconds ({limit} s) "
                                 "and was ended")
            if code != 0:
                raise StepFailed(f"ingest: python -m pipeline exited with {code}")
        manifest = read_manifest(self.storage, span)
        self.report["span"] = {
            "url": span, "ingested_now": not published,
            "records": {name: split.num_records for name, split in manifest.splits.items()},
            "quarantined": manifest.quarantine.get("count", 0)}

    def train(self, promoted: dict | None) -> str:
        version_url = self.config.version_url(self.date)
        model_dir = join(version_url, "model")
        train = self.config.raw["train"]
        init_from = promoted["model_dir"] if promoted and train["warm_start"] else None
        self.report["model"] = {"version": self.date, "model_dir": model_dir, "init_from": init_from}
        if self.storage.exists(join(model_dir, "COMMITTED")):
            say(f"model {model_dir} is already committed; not training it again")
        else:
            say(f"training version {self.date} " + (f"warm-started from {init_from}" if init_from
                                                    else "from scratch"))
            flags = launch.trainer_flags(self.config.span_url(self.date), version_url, train, init_from)
            if train["launcher"] == "local":
                launch.run_local(flags, train["processes"], train["timeout_seconds"], log=say)
            else:
                launch.run_mpijob(flags, self.config.name, self.date, self.config.raw["mpijob"], log=say)
            if not self.storage.exists(join(model_dir, "COMMITTED")):
                raise StepFailed(f"train: the trainer finished but {model_dir} has no COMMITTED marker")
        try:
            trained = json.loads(self.storage.read_text(join(version_url, "report.json")))
            self.report["model"]["span_test_accuracy"] = trained["test"]["accuracy"]
            self.report["model"]["epochs"] = trained.get("epochs")
        except (FileNotFoundError, KeyError, ValueError):
            pass
        return model_dir

    def evaluate(self, model_dir: str, promoted: dict | None) -> tuple[float, float | None]:
        evaluation = self.config.raw["evaluation"]
        models = {"new": model_dir}
        if promoted and promoted["model_dir"] != model_dir:
            models["promoted"] = promoted["model_dir"]
        # Each model's predictions.parquet beside this night's report (runs/<date>/).
        scores = evaluate.score(self.storage, models, evaluation["dataset"], evaluation["split"],
                                self.cache_dir, self.report_url.removesuffix(".json"))
        metric = evaluation["metric"]
        summary = {label: {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "examples": s["examples"],
                           "predictions": s["predictions"]} for label, s in scores.items()}
        self.report["evaluation"] = {"dataset": evaluation["dataset"], "split": evaluation["split"],
                                     "metric": metric, "new": summary["new"],
                                     "promoted": summary.get("promoted"),
                                     "promoted_version": promoted["version"] if promoted else None,
                                     # per class: images one model got right and the other wrong
                                     "right_where_other_wrong": evaluate.compared(scores, self.cache_dir)}
        old = summary["promoted"][metric] if "promoted" in summary else None
        say(f"{metric} on {evaluation['dataset']} [{evaluation['split']}]: new {summary['new'][metric]:.4f}"
            + (f", promoted ({promoted['version']}) {old:.4f}" if old is not None else ", no promoted model"))
        return summary["new"][metric], old

    def check_data(self, promoted: dict | None) -> bool:
        """The span against the dataset the promoted model was trained on (its quarantine rate
        alone when nothing is promoted or that dataset is gone)."""
        span = read_manifest(self.storage, self.config.span_url(self.date))
        baseline_url = (promoted.get("dataset") or self.config.span_url(promoted["version"])
                        if promoted else None)
        try:
            baseline = read_manifest(self.storage, baseline_url) if baseline_url else None
        except DatasetNotFound:
            say(f"data check: the promoted model's dataset {baseline_url} is gone; checking the "
                "quarantine rate only")
            baseline_url, baseline = None, None
        result = datacheck.check(span, baseline, self.config.raw.get("data_check") or {})
        self.report["data_check"] = {"ok": result.ok, "baseline": baseline_url,
                                     "problems": result.problems, **result.figures}
        say(f"data check against {baseline_url or 'no baseline'}: "
            + ("; ".join(result.problems) if result.problems else "ok"))
        return result.ok

    def promote(self, lock: NightlyLock, promoted: dict | None, token: str | None,
                model_dir: str, new: float, old: float | None) -> int:
        evaluation = self.config.raw["evaluation"]
        metric, tolerance = evaluation["metric"], self.config.raw["promotion"]["tolerance"]
        if promoted and promoted["version"] == self.date:     # a re-run after promoting: no second move
            decision = {"promoted": True, "reason": "this version is already the promoted one"}
            self.report["decision"] = {**decision, "tolerance": tolerance}
            return PROMOTED
        scored_on = {"dataset": evaluation["dataset"], "split": evaluation["split"]}
        best = promote.best_so_far(promoted, metric, scored_on)
        ok, reason = promote.decide(new, old, tolerance, best["value"] if best else None)
        self.report["decision"] = {"promoted": ok, "reason": reason, "tolerance": tolerance,
                                   "previous_version": promoted["version"] if promoted else None,
                                   "best": best}
        if not ok:
            say(f"not promoting {self.date}: {reason}; {promoted['version']} stays promoted")
            return NOT_PROMOTED
        pointer = promote.new_pointer(self.date, model_dir, metric, new, promoted, self.run_id,
                                      self.config.span_url(self.date), scored_on)
        promote.write_pointer(self.storage, self.config.models_url, pointer, token, fence=lock.verify)
        say(f"promoted {self.date} ({reason}); pointer {promote.pointer_url(self.config.models_url)}")
        return PROMOTED

    def run(self, lock: NightlyLock) -> int:
        previous = self.finished_before()
        if previous:
            say(f"nightly: {self.date} already ran to the end ({previous['status']}, run "
                f"{previous['run_id']}); nothing to do. Report: {self.report_url}")
            self.report = previous
            return PROMOTED if previous["status"] == "promoted" else NOT_PROMOTED
        promoted, token = promote.read_pointer_token(self.storage, self.config.models_url)
        if promoted and promoted["version"] == self.date and promoted.get("previous"):
            promoted_before = {**promoted["previous"]}           # compare against what it replaced
        else:
            promoted_before = promoted
        self.timed("ingest", self.ingest)
        if not self.timed("check data", self.check_data, promoted_before):
            return BAD_DATA                                       # trains nothing
        model_dir = self.timed("train", self.train, promoted_before)
        new, old = self.timed("evaluate", self.evaluate, model_dir, promoted_before)
        code = self.timed("promote", self.promote, lock, promoted, token, model_dir, new, old)
        if code == PROMOTED and self.config.raw["score"]:      # the promoted model on new images
            self.report["score"] = self.timed("score", scoring.run, self.storage, self.config, self.date,
                                              model_dir, say)
        return code

    def write_report(self, code: int, local_path: str | None, error: str | None = None) -> None:
        self.report.update(status=STATUS[code], exit_code=code, finished=now())
        if error:
            self.report["error"] = error
        text = json.dumps(self.report, indent=2)
        try:
            self.storage.write_text(self.report_url, text)
        except (StorageError, OSError) as e:
            say(f"nightly: could not write the run report to {self.report_url}: {e}")
        if local_path:
            os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
            with open(local_path, "w") as f:
                f.write(text)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
