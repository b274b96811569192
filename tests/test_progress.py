"""The progress line's counts (pipeline/progress.py): the sums of the counter objects the shard
writers keep in staging, on a real local staging folder."""
import json
import os

from pipeline import progress
from pipeline.dataset.storage import Storage


def test_a_counter_being_rewritten_beside_itself_is_counted_once(tmp_path):
    storage, staging = Storage(), str(tmp_path / "staging")
    counter = progress.Counter(storage, staging)
    counter.add(read=300, shards=1)                        # written: {"read": 300, ...}
    folder = os.path.dirname(counter.url)
    # What a local write leaves for a moment while it rewrites the counter: the new text in a
    # temporary file beside it (local_files.write_local's .tmp-*), complete, not yet renamed.
    with open(os.path.join(folder, ".tmp-k2j3h4"), "w") as f:
        json.dump({"read": 556, "quarantined": 0, "shards": 2}, f)
    assert progress.totals(storage, staging) == {"read": 300, "quarantined": 0, "shards": 1}
