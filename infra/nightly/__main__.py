"""The nightly retrain, one command for a scheduler:

  ingest the night's span -> check it against the promoted model's dataset (quarantine rate,
  class shares, record count) -> train (warm-started from the promoted model, or from scratch)
  -> score new and promoted model on a fixed evaluation split -> promote the new one unless it
  is worse than the promoted one, or than the best promoted score, by more than the tolerance
  -> write a JSON run report.

    python -m infra.nightly --config nightly.yaml [--date YYYY-MM-DD] [--report run.json]
    python -m infra.nightly --demo [--limit 300]       # embedded default: local S3 server,
                                                       # Fashion-MNIST, horovodrun -np 2

Layout under the config's root (s3:// or a local directory):
  datasets/<name>/<date>/            the span (a published dataset: manifest.json last)
  models/<name>/versions/<date>/     checkpoints, model/ (SavedModel + COMMITTED), report.json
  models/<name>/runs/<date>.json     the run report
  models/<name>/PROMOTED             pointer to the promoted version, written last (only while
                                     the lock is ours, and only over the pointer the night read)
  models/<name>/LOCK                 held while a run is in progress (expires if the run dies)

Re-running a night is safe: a published span is not ingested again, a committed model is not
trained again, a finished night only repeats its decision, the pointer is never moved twice.

Exit codes:
  0  promoted (also: this night was already promoted)
  3  not promoted: the new model is worse than the promoted one (or the best promoted score)
     by more than the tolerance
  4  another run holds the lock (nothing done; try later)
  5  the night's data failed the data check (nothing trained; the report says which figure)
  2  bad configuration or flags
  1  failed (the promoted pointer is untouched; the report says which step failed)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from infra.nightly import config as nightly_config
from infra.nightly.lock import LockHeld, LockLost, NightlyLock
from infra.nightly.night import (BAD_DATA, FAILED, LOCKED, STATUS, USAGE, Night, StepFailed, say)
from infra.nightly.promote import PointerMoved
from pipeline.dataset.local_paths import user_cache_dir
from pipeline.dataset.storage import Storage, StorageError, join


def run_night(config, date: str, report_path: str | None, cache_dir: str) -> int:
    storage = Storage()
    night = Night(config, date, storage, cache_dir)
    lock = NightlyLock(storage, join(config.models_url, "LOCK"), config.raw["lock"]["ttl_seconds"],
                       night.run_id, log=say)
    started = time.monotonic()
    try:
        lock.acquire()
    except LockHeld as e:
        say(f"nightly: {e}; exiting with {LOCKED}")
        return LOCKED
    except (StorageError, OSError) as e:
        say(f"nightly: failed: cannot take the lock: {e}")
        return FAILED
    try:
        code = night.run(lock)
        error = None
    except (StepFailed, LockLost, PointerMoved, StorageError, ValueError) as e:   # last two: reading state
        code, error = FAILED, str(e)
    finally:
        lock.release()
    if night.report.get("run_id") == night.run_id:       # not a repeat of a finished night
        night.report["durations_s"]["total"] = round(time.monotonic() - started, 1)
        night.write_report(code, report_path, error)
    elif report_path:
        with open(report_path, "w") as f:
            json.dump(night.report, f, indent=2)
    summary(night.report, code, error)
    return code


def summary(report: dict, code: int, error: str | None) -> None:
    if code == FAILED:
        say(f"\nnightly {report['name']} {report['date']}: FAILED ({error}); promoted pointer untouched; "
            f"exit {code}")
        return
    if code == BAD_DATA:
        say(f"\nnightly {report['name']} {report['date']}: DATA CHECK FAILED ("
            + "; ".join(report["data_check"]["problems"]) + f"); nothing trained, promoted pointer "
            f"untouched; span {report.get('span', {}).get('records')}; exit {code}")
        return
    evaluation = report.get("evaluation", {})
    old = evaluation.get("promoted") or {}
    metric = evaluation.get("metric", "accuracy")
    say(f"\nnightly {report['name']} {report['date']}: {STATUS[code].upper().replace('_', ' ')} "
        f"({report.get('decision', {}).get('reason', '')}); {metric} new "
        f"{evaluation.get('new', {}).get(metric, float('nan')):.4f}"
        + (f" vs promoted {old[metric]:.4f}" if old else "")
        + f"; span {report.get('span', {}).get('records')}; "
        + ", ".join(f"{k} {v:.0f} s" for k, v in report.get("durations_s", {}).items())
        + f"; exit {code}")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m infra.nightly", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="nightly YAML (keys: see infra/nightly/config.py)")
    source.add_argument("--demo", action="store_true",
                        help="embedded default: local S3 server, Fashion-MNIST, horovodrun -np 2")
    p.add_argument("--date", default=time.strftime("%Y-%m-%d", time.gmtime()),
                   help="the night (span and model version) as YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--report", help="also write the run report to this local file")
    p.add_argument("--cache-dir", help="local scratch for evaluation (default: "
                   "$XDG_CACHE_HOME or ~/.cache, /image-classifier-pipeline/nightly, created 0700)")
    p.add_argument("--limit", type=int, default=300, help="--demo: images per split (default 300)")
    args = p.parse_args(argv)
    try:
        time.strptime(args.date, "%Y-%m-%d")
    except ValueError:
        p.error(f"--date must be YYYY-MM-DD, got {args.date!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.demo:
        from infra.nightly import demo as nightly_demo

        return nightly_demo.main(args, run_night)
    try:
        config = nightly_config.load(args.config)
    except nightly_config.ConfigError as e:
        print(f"nightly: error: {e}", file=sys.stderr)
        return USAGE
    return run_night(config, args.date, args.report, args.cache_dir or user_cache_dir("nightly"))


if __name__ == "__main__":
    sys.exit(main())
