"""The training input's order, on a handful of real TFRecord files: fixed by (seed, epoch), equal
steps on every rank, a resumed stream equal to the tail of an uninterrupted one, and the ids of
any batch recoverable after the fact (what the NaN diagnosis prints). Each test runs on both
paths: images decoded once and gathered from memory, and images streamed through the shuffle
buffer (what a rank whose images do not fit in --memory-cache-gb reads)."""
import numpy as np
import pytest

from pipeline.dataset import records, tfrecord
from trainer.input import datasets as data
from trainer.input.augment import Augmentation
from tests.helpers import png

SHAPE = (8, 8, 1)


@pytest.fixture(params=["in memory", "streamed"])
def epoch_plan(request):
    """data.epoch_plan, on the path of this test's parameter."""
    limit = {"in memory": data.CACHE_LIMIT_BYTES, "streamed": 0}[request.param]

    def make(count, shape, **options):
        plan = data.epoch_plan(count, shape, memory_limit=limit, **options)
        assert plan.in_memory == (request.param == "in memory")
        return plan
    return make


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two shards of unequal size (7 and 3 records); label = the record's number."""
    where = tmp_path_factory.mktemp("shards")
    paths = []
    for shard, numbers in enumerate((range(0, 7), range(7, 10))):
        path = str(where / f"train-{shard}.tfrecord")
        with open(path, "wb") as f:
            tfrecord.write_records(f, [records.encode_example(records.ImageRecord(
                id=f"img-{n:02d}", image=png(8, 8, 1, seed=n), image_format="png", height=8, width=8,
                channels=1, label=n, label_name=str(n))) for n in numbers])
        paths.append(path)
    return paths


def labels(ds, batches: int) -> list[list[int]]:
    return [list(y.numpy()) for _, y in ds.take(batches)]


def stream(paths, plan, start=(0, 0), augment=True):
    augmentation = Augmentation(SHAPE, plan.seed) if augment else None
    return data.training_dataset(paths, SHAPE, plan, start=start, augmentation=augmentation, threads=1)


def test_each_epoch_reads_every_record_once_in_a_new_fixed_order(shards, epoch_plan):
    plan = epoch_plan(10, SHAPE, steps=5, batch_size=2, seed=3)
    epochs = labels(stream(shards, plan), 15)
    flat = [sorted(sum(epochs[e * 5:(e + 1) * 5], [])) for e in range(3)]
    assert flat == [list(range(10))] * 3
    orders = [sum(epochs[e * 5:(e + 1) * 5], []) for e in range(3)]
    assert len({tuple(o) for o in orders}) == 3                    # reshuffled every epoch
    assert labels(stream(shards, plan), 15) == epochs               # the same on every run


def test_a_rank_with_fewer_records_cycles_them_to_take_the_same_steps(shards, epoch_plan):
    """Rank 1 of 2 holds 3 records, rank 0 holds 7; both take 4 steps of 2 per epoch."""
    plan = epoch_plan(3, SHAPE, steps=4, batch_size=2, seed=1)
    epoch = sum(labels(stream(shards[1:], plan), 4), [])
    assert len(epoch) == 8 and set(epoch) == {7, 8, 9}
    assert epoch[:3] == epoch[3:6]                                  # its one order, cycled


@pytest.mark.parametrize("start", [(0, 3), (1, 0), (2, 4)])
def test_a_resumed_stream_is_the_tail_of_the_uninterrupted_one(shards, start, epoch_plan):
    plan = epoch_plan(10, SHAPE, steps=5, batch_size=2, seed=7)
    whole = list(stream(shards, plan).take(15).as_numpy_iterator())
    skip = start[0] * 5 + start[1]
    resumed = list(stream(shards, plan, start).take(15 - skip).as_numpy_iterator())
    for (image_a, label_a), (image_b, label_b) in zip(whole[skip:], resumed):
        np.testing.assert_array_equal(label_a, label_b)
        np.testing.assert_array_equal(image_a, image_b)          # the same crops and flips too


def test_batch_record_ids_name_what_the_batch_held(shards, epoch_plan):
    plan = epoch_plan(10, SHAPE, steps=5, batch_size=2, seed=5)
    batches = labels(stream(shards, plan, augment=False), 10)
    for epoch, batch in [(0, 0), (0, 4), (1, 2)]:
        ids = data.batch_record_ids(shards, None, plan, epoch, batch)
        assert ids == [f"img-{n:02d}" for n in batches[epoch * 5 + batch]]


def test_batch_augmentation_takes_a_window_of_each_padded_image_of_its_own():
    """Vectorised crops and flips: every output is some 8x8 window of its own image padded by 2
    (flipped or not); images of one batch get different windows; same (epoch, batch), same result."""
    images = np.random.default_rng(0).integers(1, 255, (16, *SHAPE), dtype=np.uint8)
    augment = Augmentation(SHAPE, seed=4, flip=True)
    out = augment.on_batch(3, 5, images).numpy()
    np.testing.assert_array_equal(out, augment.on_batch(3, 5, images).numpy())
    assert not np.array_equal(out, augment.on_batch(3, 6, images).numpy())
    windows = set()
    for image, result in zip(images, out):
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
        found = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                 if np.array_equal(result, (lambda w: w[:, ::-1] if flip else w)(padded[dy:dy + 8, dx:dx + 8]))]
        assert found, "an output that is no window of its image"
        windows.add(found[0])
    assert len(windows) > 4


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_random_erasing_replaces_one_rectangle_of_2_to_40_percent(dtype):
    """--erase 1: every image has one axis-aligned rectangle of noise and is untouched elsewhere;
    --erase 0.5 erases about half; the same (epoch, batch) key gives the same rectangles."""
    pixels = np.random.default_rng(1).integers(0, 256, (64, 16, 16, 3))
    images = (pixels / 255).astype(np.float32) if dtype == np.float32 else pixels.astype(np.uint8)
    erase_all = Augmentation((16, 16, 3), seed=7, erase=1.0)
    out = erase_all.erased(images, erase_all.keys(2, 9)).numpy()
    np.testing.assert_array_equal(out, erase_all.erased(images, erase_all.keys(2, 9)).numpy())
    for image, result in zip(images, out):
        rows, columns = np.nonzero((image != result).any(axis=-1))
        box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
        outside = np.ones(image.shape[:2], bool)
        outside[box] = False
        assert not (image != result)[outside].any(), "a pixel changed outside the rectangle"
        assert 0.01 <= outside[box].size / outside.size <= 0.41
        assert result.min() >= 0 and result.max() <= (255 if dtype == np.uint8 else 1)
    half = Augmentation((16, 16, 3), seed=7, erase=0.5)
    changed = (half.erased(images, half.keys(2, 9)).numpy() != images).any(axis=(1, 2, 3))
    assert 16 <= changed.sum() <= 48
