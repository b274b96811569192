"""The promotion pointer and the rule that moves it.

models/<name>/PROMOTED is one small JSON object naming the promoted version, its model
directory, the dataset it was trained on (the data gate's baseline) and the best score any
promoted model reached on the same evaluation. It is written after the model is committed and
evaluated; models are never deleted, so rolling back is writing the pointer again.

The rule compares against two bars: the promoted model (scored again tonight on the same split)
and the best promoted score minus the tolerance, so nights that are each a little worse than
the last cannot drift down one tolerance per night.

The write is fenced twice: the caller checks that the lock is still ours (with time to spare)
just before, and the PUT is conditional on the pointer being what this night read at its start,
so a run that took the lock over and promoted meanwhile is never overwritten.
"""
from __future__ import annotations

import json
import time

from pipeline.dataset.storage import Storage, WriteConflict, join


class PointerMoved(Exception):
    """The pointer changed since this night read it: someone else promoted; nothing written."""


def pointer_url(models_url: str) -> str:
    return join(models_url, "PROMOTED")


def read_pointer(storage: Storage, models_url: str) -> dict | None:
    return read_pointer_token(storage, models_url)[0]


def read_pointer_token(storage: Storage, models_url: str) -> tuple[dict | None, str | None]:
    """(pointer, token for a conditional replace), or (None, None) when nothing is promoted."""
    url = pointer_url(models_url)
    try:
        data, token = storage.read_versioned(url)
    except FileNotFoundError:
        return None, None
    try:
        return json.loads(data), token
    except ValueError:
        raise ValueError(f"{url} is not JSON; fix or remove it by hand") from None


def best_so_far(pointer: dict | None, metric: str, evaluation: dict) -> dict | None:
    """The best promoted score on this metric and evaluation split ({"version", "value"}), or
    None if nothing promoted was scored the same way (then only the current model is a bar)."""
    if not pointer or pointer.get("metric") != metric:
        return None
    best = pointer.get("best") or {"version": pointer["version"], "value": pointer["value"],
                                   "evaluation": pointer.get("evaluation")}
    if best.get("evaluation") not in (None, evaluation):
        return None
    return best


def decide(new: float, old: float | None, tolerance: float,
           best: float | None = None) -> tuple[bool, str]:
    """Promote unless the new model is worse than the promoted one, or than the best promoted
    score, by more than the tolerance."""
    if old is None and best is None:
        return True, "no promoted model yet"
    if old is not None and new < old - tolerance:
        return False, f"{new:.4f} < {old:.4f} - {tolerance} (worse by {old - new:.4f})"
    if best is not None and new < best - tolerance:
        return False, (f"{new:.4f} < best promoted {best:.4f} - {tolerance} (drifted "
                       f"{best - new:.4f} below the best)")
    bars = [f"{old:.4f}" if old is not None else None, f"best {best:.4f}" if best is not None else None]
    return True, f"{new:.4f} >= {' and '.join(b for b in bars if b)} - {tolerance}"


def new_pointer(version: str, model_dir: str, metric: str, value: float, previous: dict | None,
                run_id: str, dataset: str, evaluation: dict) -> dict:
    best = best_so_far(previous, metric, evaluation)
    if best is None or value > best["value"]:
        best = {"version": version, "value": value, "evaluation": evaluation}
    return {"version": version, "model_dir": model_dir, "metric": metric, "value": value,
            "run_id": run_id, "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dataset": dataset, "evaluation": evaluation, "best": best,
            "previous": {k: previous[k] for k in ("version", "model_dir", "value") if k in previous}
            if previous else None}


def write_pointer(storage: Storage, models_url: str, pointer: dict, token: str | None,
                  fence=None) -> dict:
    """Write the pointer if it is still the one read with `token` (None: if there is none);
    `fence()` runs just before and raises if this run may no longer write (the lock)."""
    if fence:
        fence()
    condition = {"if_match": token} if token else {"if_none_match": True}
    try:
        storage.write_text(pointer_url(models_url), json.dumps(pointer, indent=2), **condition)
    except WriteConflict:
        raise PointerMoved(f"{pointer_url(models_url)} changed since this night read it (another "
                           "run promoted meanwhile); not overwritten") from None
    return pointer
