"""The one line a data engineer reads at the end of an ingestion run: the version published,
the records, what was quarantined, the speed, what the workers had to retry, and the log."""
from __future__ import annotations

from pipeline.dataset.manifest import Manifest

# What the workers log as warnings, each also counted by a Beam counter (namespace, name): the
# warnings themselves are in the log file only, their counts reach the summary through the
# runner's metrics. (singular, plural) of what one count is.
WORKER_WARNINGS = {("cassandra", "range_retries"): ("Cassandra retry", "Cassandra retries"),
                   ("ingest", "shards_written_again"): ("shard written again", "shards written again")}


def summary_line(manifest: Manifest, output: str, seconds: float, warnings: dict[str, int] | None = None,
                 log_file: str | None = None) -> str:
    splits = " / ".join(f"{name} {s.num_records:,}" for name, s in manifest.splits.items())
    written = sum(s.num_records for s in manifest.splits.values())
    shards = sum(len(s.shards) for s in manifest.splits.values())
    size = sum(s.num_bytes for s in manifest.splits.values()) / 2**20
    bad = manifest.quarantine["count"]
    reasons = ", ".join(f"{k} {v}" for k, v in manifest.quarantine["by_reason"].items())
    rate = (written + bad) / seconds if seconds > 0 else 0.0
    retried = ", ".join(f"{count:,} {what}" for what, count in (warnings or {}).items())
    published = " ".join(filter(None, (manifest.name, manifest.version)))
    return (f"published {published} at {output}: {splits} records in "
            f"{shards} shards ({size:.1f} MiB), {len(manifest.classes)} classes; quarantined {bad}"
            f"{f' ({reasons})' if reasons else ''}; {written + bad:,} images in {seconds:.0f} s "
            f"({rate:.0f} images/s)" + (f"; {retried} (see the log)" if retried else "")
            + (f"; log: {log_file}" if log_file else ""))


def worker_warnings(result) -> dict[str, int]:
    """{"Cassandra retries": 20, ...}: the WORKER_WARNINGS counters of a finished job that are not
    zero, summed over its steps; {} when the runner reports no metrics."""
    try:
        from apache_beam.metrics.metric import MetricsFilter

        counters = result.metrics().query(MetricsFilter())["counters"]
    except Exception:      # a runner without a metrics API: the warnings are still in the log
        return {}
    found: dict[str, int] = {}
    for counter in counters:
        names = WORKER_WARNINGS.get((counter.key.metric.namespace, counter.key.metric.name))
        value = counter.committed if counter.committed is not None else counter.attempted
        if names and value:
            found[names[1]] = found.get(names[1], 0) + value
    singular = {plural: one for one, plural in WORKER_WARNINGS.values()}
    return {(singular[what] if count == 1 else what): count for what, count in found.items()}
