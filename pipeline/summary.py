"""The one line a data engineer reads at the end of an ingestion run."""
from __future__ import annotations

from pipeline.dataset.manifest import Manifest


def summary_line(manifest: Manifest, output: str, seconds: float) -> str:
    splits = " / ".join(f"{name} {s.num_records:,}" for name, s in manifest.splits.items())
    written = sum(s.num_records for s in manifest.splits.values())
    shards = sum(len(s.shards) for s in manifest.splits.values())
    size = sum(s.num_bytes for s in manifest.splits.values()) / 2**20
    bad = manifest.quarantine["count"]
    reasons = ", ".join(f"{k} {v}" for k, v in manifest.quarantine["by_reason"].items())
    rate = (written + bad) / seconds if seconds > 0 else 0.0
    return (f"published {manifest.name} at {output}: {splits} records in {shards} shards "
            f"({size:.1f} MiB), {len(manifest.classes)} classes; quarantined {bad}"
            f"{f' ({reasons})' if reasons else ''}; {written + bad:,} images in {seconds:.0f} s "
            f"({rate:.0f} images/s)")
