"""What the launcher checks in a staged publish request before it commits anything: a dataset
nobody can train on is refused, one the trainer would have to guess about is published with one
warning line per problem, each naming the flag that fixes it."""
from __future__ import annotations

import collections

from pipeline.dataset.manifest import SPLITS
from pipeline.dataset.storage import Storage, join
from pipeline.elements import PublishRequest, image_sizes, summed


class Unpublishable(Exception):
    """The staged dataset has no records, or a split with none; the message says why."""


def refusal(request: PublishRequest) -> str | None:
    """Why the request must not be published (zero records, or a split whose records were
    all quarantined), or None."""
    records = split_records(request)
    if sum(records.values()) == 0:
        return "no records: every image was quarantined or none matched --classes"
    empty = [split for split, n in records.items() if n == 0]
    if empty:
        return f"the {' and '.join(empty)} split has no records (every image of it was quarantined)"
    return None


def split_records(request: PublishRequest) -> dict[str, int]:
    records: dict[str, int] = collections.Counter()
    for info in request.shards:
        records[info.split] += info.records
    return {split: records[split] for split in SPLITS if split in records}


def empty_classes(request: PublishRequest) -> list[str]:
    """Classes of the label space that no published record has."""
    classes = request.space.classes
    counts = [sum(i.class_counts[c] for i in request.shards) for c in range(len(classes))]
    return [name for name, count in zip(classes, counts) if count == 0]


def warnings(request: PublishRequest) -> list[str]:
    """One line per problem a trainer would meet later (pass --channels / --resize to fix)."""
    lines = []
    empty = empty_classes(request)
    if empty:
        lines.append(f"{len(empty)} class(es) have no records: {', '.join(empty[:10])}"
                     f"{' ...' if len(empty) > 10 else ''} (the trainer still gives them an "
                     "output; --strict_classes refuses such a dataset)")
    channels = summed(i.channel_counts for i in request.shards)
    if len(channels) > 1:
        counts = ", ".join(f"{n:,} with {c} channel(s)" for c, n in sorted(channels.items()))
        lines.append(f"images disagree in channels ({counts}): the trainer decodes them all as "
                     "RGB, and the pixel statistics are those of that view; pass --channels 1 or 3 "
                     "to store them converted")
    summary = image_sizes(request.shards)
    if summary and not summary.fixed:
        (h0, h, h1), (w0, w, w1) = summary.height, summary.width
        lines.append(f"images differ in size (height {h0}-{h1}, median {h}; width {w0}-{w1}, median "
                     f"{w}): kept as they are; the trainer crops them to --image-size (pass --resize "
                     "HxW at ingestion for one stored size)")
    return lines


def keep_quarantine(storage: Storage, staging_url: str, folder_url: str, request: PublishRequest) -> int:
    """A refused run's quarantine files, moved to `folder_url` for inspection (nothing else of
    the run is kept); returns the number of entries."""
    for info in request.quarantine:
        storage.move(join(staging_url, info.file), join(folder_url, info.file))
    return sum(info.entries for info in request.quarantine)
