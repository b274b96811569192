"""The rows batch scoring writes: one per image and head, the error of an image not scored.

Column for column what trainer/results/predictions.py writes for a test image, less the true
label (an image scored here has none) and plus where it came from and its error."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

TOP = 5
SCHEMA = pa.schema([
    ("id", pa.string()),                # the image's key under --source
    ("source", pa.string()),            # its URL
    ("head", pa.string()),              # "label", or the attribute of a multi-head model
    ("predicted", pa.int64()),          # -1: not scored (see error)
    ("predicted_name", pa.string()),
    ("probability", pa.float32()),      # of the predicted class
    ("top_classes", pa.list_(pa.string())), ("top_probabilities", pa.list_(pa.float32())),
    ("error", pa.string()),             # "" when scored
])


def scored(key: str, url: str, head: str, probabilities: np.ndarray, classes: list[str]) -> dict:
    """One image's row for one head from its probabilities (the serving signature's)."""
    top = np.argsort(-probabilities, kind="stable")[:TOP]
    return {"id": key, "source": url, "head": head, "predicted": int(top[0]),
            "predicted_name": classes[int(top[0])], "probability": float(probabilities[top[0]]),
            "top_classes": [classes[int(i)] for i in top],
            "top_probabilities": [float(probabilities[i]) for i in top], "error": ""}


def failed(key: str, url: str, error: str, head: str = "") -> dict:
    """The row of an image that was not scored, and why (one line)."""
    return {"id": key, "source": url, "head": head, "predicted": -1, "predicted_name": None,
            "probability": None, "top_classes": [], "top_probabilities": [],
            "error": error.splitlines()[0][:500] if error else "not scored"}


def table(rows: list[dict]) -> pa.Table:
    """Rows in a stable order (by id, then head): the same input gives the same file."""
    return pa.Table.from_pylist(sorted(rows, key=lambda r: (r["id"], r["head"])), schema=SCHEMA)
