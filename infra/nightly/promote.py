"""The promotion pointer and the rule that moves it.

models/<name>/PROMOTED is one small JSON object naming the promoted version and its model
directory. It is written after the model is committed and evaluated; models are never deleted,
so rolling back is writing the pointer again.
"""
from __future__ import annotations

import json
import time

from pipeline.dataset.storage import Storage, join


def pointer_url(models_url: str) -> str:
    return join(models_url, "PROMOTED")


def read_pointer(storage: Storage, models_url: str) -> dict | None:
    url = pointer_url(models_url)
    try:
        return json.loads(storage.read_text(url))
    except FileNotFoundError:
        return None
    except ValueError:
        raise ValueError(f"{url} is not JSON; fix or remove it by hand") from None


def write_pointer(storage: Storage, models_url: str, version: str, model_dir: str,
                  metric: str, value: float, previous: dict | None, run_id: str) -> dict:
    pointer = {"version": version, "model_dir": model_dir, "metric": metric, "value": value,
               "run_id": run_id, "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "previous": {k: previous[k] for k in ("version", "model_dir", "value") if k in previous}
               if previous else None}
    storage.write_text(pointer_url(models_url), json.dumps(pointer, indent=2))
    return pointer


def decide(new: float, old: float | None, tolerance: float) -> tuple[bool, str]:
    """Promote unless the new model is worse than the promoted one by more than the tolerance."""
    if old is None:
        return True, "no promoted model yet"
    if new >= old - tolerance:
        return True, f"{new:.4f} >= {old:.4f} - {tolerance}"
    return False, f"{new:.4f} < {old:.4f} - {tolerance} (worse by {old - new:.4f})"
