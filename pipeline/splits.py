"""Stable split assignment: a record's split depends on its id only, never on the run."""
from __future__ import annotations

import hashlib

from pipeline.dataset.manifest import SPLITS


def parse_ratios(text: str) -> dict[str, float]:
    """'train:0.8,validation:0.1,test:0.1' -> {split: fraction}; fractions must sum to 1."""
    ratios = {}
    for part in text.split(","):
        name, _, value = part.partition(":")
        name = name.strip()
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} in --splits {text!r} (use {', '.join(SPLITS)})")
        try:
            ratios[name] = float(value)
        except ValueError:
            raise ValueError(f"--splits {text!r}: {value!r} is not a number") from None
        if ratios[name] < 0:
            raise ValueError(f"--splits {text!r}: negative ratio for {name}")
    if abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ValueError(f"--splits {text!r}: ratios sum to {sum(ratios.values()):g}, not 1")
    return ratios


def unit_hash(record_id: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from the id's sha256."""
    digest = hashlib.sha256((salt + record_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(record_id: str, ratios: dict[str, float]) -> str:
    point, edge = unit_hash(record_id, "split:"), 0.0
    for name in SPLITS:
        edge += ratios.get(name, 0.0)
        if point < edge:
            return name
    return max(ratios, key=ratios.get)  # float rounding at the top edge
