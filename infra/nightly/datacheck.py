"""The data gate: before a night trains, its span is compared with the dataset the promoted
model was trained on, so a broken export (a flood of corrupt images, a class that vanished, half
the rows missing) ends the night instead of becoming a model.

Three figures, each with a threshold in the config (`data_check`, null turns one off):
  quarantine rate      quarantined / (published + quarantined) in the span (needs no baseline)
  class share change   per class, |share in span - share in baseline| / share in baseline
  record count change  |records in span - records in baseline| / records in baseline
"""
from __future__ import annotations

import dataclasses

from pipeline.dataset.manifest import Manifest


@dataclasses.dataclass
class DataCheck:
    problems: list[str]          # one phrase per threshold exceeded; empty: the data may be used
    figures: dict                # what was measured, for the run report

    @property
    def ok(self) -> bool:
        return not self.problems


def records(manifest: Manifest) -> int:
    return sum(split.num_records for split in manifest.splits.values())


def class_counts(manifest: Manifest) -> list[int]:
    counts = [0] * len(manifest.classes)
    for split in manifest.splits.values():
        counts = [a + b for a, b in zip(counts, split.class_counts)]
    return counts


def shares(manifest: Manifest) -> dict[str, float]:
    total = max(records(manifest), 1)
    return {name: count / total for name, count in zip(manifest.classes, class_counts(manifest))}


def check(span: Manifest, baseline: Manifest | None, limits: dict) -> DataCheck:
    """Compare the night's span with the baseline dataset (None: only the quarantine rate)."""
    problems, figures = [], {}
    published, quarantined = records(span), span.quarantine.get("count", 0)
    rate = quarantined / max(published + quarantined, 1)
    figures["quarantine_rate"] = round(rate, 4)
    if limits.get("max_quarantine_rate") is not None and rate > limits["max_quarantine_rate"]:
        problems.append(f"{rate:.1%} of the span's images were quarantined "
                        f"(max {limits['max_quarantine_rate']:.1%})")
    if baseline is None:
        return DataCheck(problems, figures)
    before, after = shares(baseline), shares(span)
    changes = {name: abs(after.get(name, 0.0) - share) / share
               for name, share in before.items() if share > 0}
    worst = max(changes, key=changes.get, default=None)
    figures["class_share_change"] = {name: round(value, 4) for name, value in changes.items()}
    limit = limits.get("max_class_share_change")
    if worst is not None and limit is not None and changes[worst] > limit:
        problems.append(f"class {worst!r} is {after.get(worst, 0.0):.1%} of the span against "
                        f"{before[worst]:.1%} before (change {changes[worst]:.0%}, max {limit:.0%})")
    count_change = abs(published - records(baseline)) / max(records(baseline), 1)
    figures.update(records=published, baseline_records=records(baseline),
                   record_count_change=round(count_change, 4))
    limit = limits.get("max_record_count_change")
    if limit is not None and count_change > limit:
        problems.append(f"{published} records against {records(baseline)} before "
                        f"(change {count_change:.0%}, max {limit:.0%})")
    return DataCheck(problems, figures)
