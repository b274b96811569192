"""The progress line (pipeline/dataset/progress_line.py) and the ingestion's counts behind it
(pipeline/progress.py): the sums of the counter objects the shard writers keep in staging, on a
real local staging folder; the line on a terminal and in a log."""
import io
import json
import os

from pipeline import progress
from pipeline.dataset.progress_line import LiveLine, Meter, Progress, parse
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
    assert progress.totals(storage, staging) == {"read": 300, "quarantined": 0, "shards": 1, "total": 0}


def test_the_splits_totals_are_summed_beside_the_counters(tmp_path):
    storage, staging = Storage(), str(tmp_path / "staging")
    progress.Counter(storage, staging).add(read=40, shards=1)
    progress.note_total(("train", (950, 123456)), storage, staging)
    progress.note_total(("validation", (50, 6789)), storage, staging)
    assert progress.totals(storage, staging) == {"read": 40, "quarantined": 0, "shards": 1, "total": 1000}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_rate_is_the_last_windows_and_the_time_left_follows_it():
    """A slow start (10 images in the first 60 s) does not drag the current rate down."""
    clock = Clock()
    meter = Meter(total=1000, window=20, clock=clock)
    clock.now += 60
    meter.update(10)
    for _ in range(4):
        clock.now += 10
        meter.update(meter.done + 100)                  # 10 images/s from here on
    line = meter.progress("upload:", "images").line()
    assert line == "upload: 410/1,000 images (41 %), 10 images/s, 59 s left", line


def test_a_line_is_read_back_as_written():
    shown = Progress("epoch 2/6 step", 120, "", 469, 1850.4, "images", 31, "loss 0.4123 acc 0.8512")
    assert shown.line() == "epoch 2/6 step 120/469 (25 %), 1,850 images/s, 31 s left; loss 0.4123 acc 0.8512"
    back = parse("[0]<stdout>:" + shown.line())            # as horovodrun relays rank 0's line
    assert (back.what, back.done, back.total, back.rate_unit, back.extra) == \
        ("epoch 2/6 step", 120, 469, "images", "loss 0.4123 acc 0.8512")
    ingest = parse("ingest: 30,211/66,500 images read (45 %), 212 images/s, 2 min 51 s left; 0 quarantined")
    assert (ingest.done, ingest.total, ingest.unit) == (30211, 66500, "images read")
    summary = ("published fmnist v-0123 at s3://x/ds: train 950 / validation 50 records in 4 shards "
               "(0.3 MiB), 10 classes; quarantined 0; 1,000 images in 35 s (29 images/s); log: x.log")
    assert parse(summary) is None and parse("epoch 1/6 done in 35 s: loss 0.5 (1850 img/s)") is None


def test_on_a_terminal_one_line_is_rewritten_and_other_lines_go_above_it():
    screen = io.StringIO()
    live = LiveLine(screen, tty=True)
    live.progress("ingest: 10/100 images read (10 %), 5 images/s, 18 s left")
    live.progress("ingest: 20/100 images read (20 %), 5 images/s, 16 s left")
    print("warning: something", file=live)                  # print writes the text, then "\n"
    live.end()
    assert screen.getvalue() == (
        "\r" + "ingest: 10/100 images read (10 %), 5 images/s, 18 s left" + "\x1b[K"
        "\r" + "ingest: 20/100 images read (20 %), 5 images/s, 16 s left" + "\x1b[K"
        "\r\x1b[K" "warning: something" "\n"
        "\r" + "ingest: 20/100 images read (20 %), 5 images/s, 16 s left" + "\x1b[K" "\n")


def test_in_a_log_progress_lines_are_plain_and_periodic_and_the_last_one_is_kept():
    clock, log = Clock(), io.StringIO()
    live = LiveLine(log, every=10, tty=False, clock=clock)
    for done in range(0, 101, 10):                            # one every 3 s
        live.progress(Progress("upload:", done, "images", 100, 5.0).line())
        clock.now += 3
    assert [int(line.split()[1].split("/")[0]) for line in log.getvalue().splitlines()] == [0, 40, 80, 100]
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
