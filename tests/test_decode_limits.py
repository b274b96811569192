"""Memory and pixels bounded per image (issue 26, items 6 and 7), with real images: a 7000x7000
RGBA PNG (a few hundred KB, under the 50 Mpx limit) used to cost 2.1 GB in the ingestion's
statistics; a worker's decodes are now bounded by --worker_memory_gb; a 20000x20000 PNG is
refused by its header in load() and answered with a per-item error by the serving signature,
before anything is decoded."""
import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf

from pipeline.dataset import records, tfrecord
from pipeline.dataset.local_files import file_digest
from pipeline.dataset.manifest import read_manifest, write_manifest
from pipeline.dataset.storage import Storage, join
from tests.conftest import ROOT
from tests.helpers import png
from tests.test_cli_errors import one_clear_line
from tests.test_ingest_errors import folders, ingest

SIDE = 7000
MiB = 2**20


def real_png(height: int, width: int, mode: str) -> bytes:
    """A real, complete PNG of `mode` (L or RGBA), blocks of colour, compressed row by row so
    that making a huge one costs no memory (zlib keeps a 32 KB window)."""
    channels, colour = {"L": (1, 0), "RGBA": (4, 6)}[mode]
    rng = np.random.default_rng(height)
    palette = rng.integers(0, 256, (64, channels), np.uint8)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, body = zlib.compressobj(6), []
    for y in range(height):
        row = np.repeat(palette[(y // 100 + np.arange(width // 100 + 1)) % 64], 100, axis=0)[:width]
        body.append(packer.compress(b"\0" + row.tobytes()))
    body.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body))
            + chunk(b"IEND", b""))


# Peak from the process's own memory map (VmHWM): ru_maxrss would carry the forking parent's.
PEAK = """
import sys, threading
from pipeline.images import prepare_image
data = open(sys.argv[1], "rb").read()
threads, channels, budget_gb = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
options = {}
if budget_gb:
    from pipeline import decode_budget
    options["budget"] = decode_budget.shared(int(budget_gb * 2**30))
def high_water():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
before = high_water()
work = [threading.Thread(target=prepare_image, args=(data, 60_000_000, channels), kwargs=options)
        for _ in range(threads)]
[t.start() for t in work]
[t.join() for t in work]
print(high_water() - before)
"""


def peak_bytes(path, threads: int = 1, channels: int = 0, budget_gb: float = 0) -> int:
    """How much a fresh process's peak RSS grows while `threads` threads prepare the image."""
    result = subprocess.run([sys.executable, "-c", PEAK, str(path), str(threads), str(channels), str(budget_gb)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split()[-1])


@pytest.fixture(scope="module")
def rgba_7000(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "rgba.png"
    path.write_bytes(real_png(SIDE, SIDE, "RGBA"))
    assert path.stat().st_size < 2 * MiB
    return path


def test_statistics_of_a_7000x7000_rgba_png_need_no_full_size_copy(rgba_7000):
    """Measured: 2,058 MiB before (the int64 copy), 189 MiB now (the decoded image itself is 187)."""
    pixels = SIDE * SIDE
    assert peak_bytes(rgba_7000) < 5 * pixels                      # ~4 bytes a pixel: the image
    from pipeline.decode_budget import BYTES_PER_PIXEL
    assert peak_bytes(rgba_7000, channels=3) < BYTES_PER_PIXEL * pixels   # converted: within the cost model


def test_the_worker_memory_budget_bounds_the_images_decoded_at_once(rgba_7000):
    """Four threads converting the image at once hold ~4 x 480 MiB; a budget of one image's cost
    (12 bytes a pixel: 561 MiB) lets one decode at a time."""
    one = peak_bytes(rgba_7000, channels=3)
    assert peak_bytes(rgba_7000, threads=4, channels=3, budget_gb=0.56) < 1.5 * one


def test_a_budget_below_one_image_of_max_pixels_is_refused_in_one_line(tmp_path):
    result = ingest(folders(tmp_path / "images", {"a": 2, "b": 2}), tmp_path / "out", "--worker_memory_gb", "0.1")
    assert result.returncode == 2
    one_clear_line(result, "--worker_memory_gb 0.1", "--max_pixels 50,000,000")


# -- reading and serving: the header first --------------------------------------------------------

@pytest.fixture(scope="module")
def huge_png():
    """A real 20000x20000 grey PNG: ~400 KB that decode to 400 MB (1.2 GB as RGB)."""
    return real_png(20_000, 20_000, "L")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("limits")
    result = ingest(folders(root / "images", {"a": 3, "b": 3}), root / "dataset")
    assert result.returncode == 0, result.stderr[-2000:]
    return str(root / "dataset")


def with_hostile_record(url: str, image: bytes) -> None:
    """Add a record holding `image` to the first training shard and make the manifest agree (its
    counts and sha256): what someone who can write the bucket could publish."""
    storage = Storage()
    manifest = read_manifest(storage, url)
    shard = manifest.splits["train"].shards[0]
    path = join(url, shard.file)
    with open(path, "rb") as f:
        kept = list(tfrecord.read_records(f))
    hostile = records.encode_example(records.ImageRecord("hostile", image, "png", 8, 8, 1, 0, "a"))
    with open(path, "wb") as f:
        tfrecord.write_records(f, kept + [hostile])
    shard.sha256, shard.bytes = file_digest(path)
    shard.records += 1
    write_manifest(storage, url, manifest)


def test_load_refuses_a_record_past_the_limit_before_decoding_it(dataset, huge_png, tmp_path):
    from pipeline.dataset.load import load

    with_hostile_record(dataset, huge_png)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"too many pixels: 20000x20000 > 50000000"):
        for _ in load(dataset, "train", cache_dir=str(tmp_path)):
            pass


def test_serving_answers_a_per_item_error_and_predicts_the_rest(dataset, huge_png, tmp_path):
    from trainer.input.model_input import ModelInput
    from trainer.model import heads
    from trainer.model.models import build_model
    from trainer.results.export import export_model

    manifest = read_manifest(Storage(), dataset)
    model_input = ModelInput.of(manifest, None)
    model = build_model("linear", model_input.shape, len(manifest.classes))
    export_model(Storage(), model, str(tmp_path / "model"), str(tmp_path / "export"),
                 heads.choose(None, manifest), model_input)
    serve = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    good = [png(8, 8, 1, seed=s) for s in (1, 2)]
    out = serve(image_bytes=tf.constant([good[0], huge_png, b"not an image", good[1]]))
    assert [e.decode() for e in out["error"].numpy()] == [
        "", "too many pixels: 20000x20000 > 50000000",
        "not a PNG, JPEG, GIF or BMP image (no size in its header)", ""]
    assert [c.decode() for c in out["class"].numpy()][1:3] == ["", ""]
    assert not out["probabilities"].numpy()[1:3].any()
    alone = serve(image_bytes=tf.constant(good))["probabilities"].numpy()
    np.testing.assert_allclose(out["probabilities"].numpy()[[0, 3]], alone, atol=1e-6)
