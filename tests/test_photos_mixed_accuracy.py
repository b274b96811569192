"""Photos as a team keeps them (issue 28): 7,500 Fashion-MNIST items pasted at 30-200 px into
canvases of random sizes, half of them colour photos (tinted, on coloured backgrounds), one in
ten stored turned with an EXIF orientation as a phone does (infra/local/photos.py), ingested by
the real Beam job, trained with default flags and only --epochs 3 --image-size 48 under
horovodrun -np 2. What it checks: the test accuracy (measured here: BAR's comment), the turned,
grey and colour photos each served well through the SavedModel fed the original files, a grey
image and the same image as RGB served the same class, and the two pictures of what the model
sees written beside the report."""
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from infra.local import photos
from pipeline.dataset import records, tfrecord
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage, join
from tests.conftest import ingest_folders, run_cli

# Measured here (2026-12-06): 0.7899 on 1,114 test images; served, grey 0.8029 (553), colour
# 0.7772 (561), turned 0.8151 (119). The same items ingested at their native 28x28: see
# docs/trainer.md "Photos". Five points of margin; each group about eight.
BAR = 0.74
GROUP_BAR = 0.70


@pytest.mark.slow        # minutes of end-to-end training: `make test-all` runs it (README)
def test_mixed_grey_colour_and_turned_photos_train_and_serve(tmp_path):
    raw, dataset, run = tmp_path / "raw", str(tmp_path / "dataset"), tmp_path / "run"
    written = photos.write(Storage(), str(raw), photos.pasted_fashion(7500, colour=0.5, turned=0.1))
    ingest_folders(str(raw), dataset, "train:0.82,validation:0.03,test:0.15")
    manifest = read_manifest(Storage(), dataset)
    assert len(manifest.splits["train"].pixel_mean) == 3                 # mixed: standardised as RGB
    result = run_cli(["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo", "python", "-m", "trainer",
                      "--dataset", dataset, "--checkpoint-dir", str(run), "--cache-dir", f"{run}-cache",
                      "--epochs", "3", "--image-size", "48", "--no-tensorboard"])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    report = json.loads((run / "report.json").read_text())
    accuracy = report["test"]["accuracy"]

    test = stored(dataset, manifest)
    serve = tf.saved_model.load(str(run / "model")).signatures["serving_default"]
    served = classes_of(serve, [written[r.id] for r in test])
    right = np.array([s == r.label_name for s, r in zip(served, test)])
    groups = {"grey": [r.channels == 1 for r in test], "colour": [r.channels == 3 for r in test],
              "turned": [r.orientation != 1 for r in test]}
    by_group = {name: right[np.array(members)].mean() for name, members in groups.items()}
    print(f"mixed photos, 3 epochs at 48 px: test accuracy {accuracy:.4f} on {report['test']['examples']} "
          f"images; served: {', '.join(f'{k} {v:.4f} ({sum(groups[k])})' for k, v in by_group.items())}")
    assert report["test"]["examples"] > 1000 and accuracy >= BAR, output[-3000:]
    assert min(by_group.values()) >= GROUP_BAR, by_group
    assert abs(right.mean() - accuracy) < 0.02          # serving the files agrees with evaluation

    # A grey image and the same image as RGB: the same class, every one.
    grey = [png(ImageOps.exif_transpose(Image.open(io.BytesIO(written[r.id]))).convert("L")) for r in test]
    rgb = [png(Image.open(io.BytesIO(g)).convert("RGB")) for g in grey]
    assert classes_of(serve, grey) == classes_of(serve, rgb)

    for name in ("train_batch", "eval_batch"):
        picture = Image.open(run / f"{name}.png")
        picture.load()
        # 64 per rank -> 64 tiles, 8 x 8, each 96 px (48 enlarged twice) + 2 + a 14-px caption.
        assert picture.size == (8 * 98, 8 * (96 + 14 + 2)), (name, picture.size)
    assert report["batches"] == {"train_batch": str(run / "train_batch.png"),
                                 "eval_batch": str(run / "eval_batch.png")}


def stored(url: str, manifest) -> list[records.ImageRecord]:
    found = []
    for shard in manifest.splits["test"].shards:
        data = Storage().read_bytes(join(url, shard.file))
        found += [records.decode_example(r) for r in tfrecord.read_records(io.BytesIO(data))]
    return found


def classes_of(serve, images: list[bytes]) -> list[str]:
    found = []
    for start in range(0, len(images), 256):
        out = serve(image_bytes=tf.constant(images[start:start + 256]))
        assert not any(out["error"].numpy()), out["error"].numpy()
        found += [c.decode() for c in out["class"].numpy()]
    return found


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
