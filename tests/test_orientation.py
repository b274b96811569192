"""EXIF orientation, end to end (issue 28): real JPEGs made with Pillow from skimage's astronaut
photo, one for each orientation 1-8 (the stored pixels turned so that the tag makes them upright,
as a phone writes them), ingested by the real Beam job. The stored bytes stay byte-identical,
and load(), the trainer's input (in memory, evaluation crops, training crops) and the exported
serving signature all give the pixels PIL.ImageOps.exif_transpose gives. TensorFlow's and
Pillow's JPEG decoders differ by ~2 levels on average; a wrong turn differs by tens."""
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from pipeline.dataset import records, tfrecord
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage, join
from tests.conftest import run_cli

HEIGHT, WIDTH = 64, 96                  # upright; turned photos (5-8) are stored 96x64
# The transpose that makes the stored pixels of orientation o from the upright photo: the
# inverse of exif_transpose's (its own inverse for all but the quarter turns).
STORED = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
          6: "ROTATE_90", 7: "TRANSVERSE", 8: "ROTATE_270"}
DECODERS_DIFFER = 3.5                   # mean absolute difference allowed, 0-255


def photo(orientation: int) -> bytes:
    from skimage import data

    upright = Image.fromarray(data.astronaut()).resize((WIDTH, HEIGHT), Image.BILINEAR)
    stored = upright if orientation == 1 else upright.transpose(getattr(Image.Transpose, STORED[orientation]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def upright(data: bytes) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))), dtype=np.float32)


def as_stored(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32)


def close(image, expected) -> bool:
    image = np.asarray(image, np.float32)
    return image.shape == expected.shape and np.abs(image - expected).mean() < DECODERS_DIFFER


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[str, dict[str, bytes]]:
    """{record id: bytes}: two classes, so the job has labels to give."""
    raw = tmp_path_factory.mktemp("orientation") / "raw"
    found = {}
    for orientation in range(1, 9):
        key = f"{'even' if orientation % 2 == 0 else 'odd'}/turned-{orientation}.jpg"
        (raw / key).parent.mkdir(parents=True, exist_ok=True)
        (raw / key).write_bytes(photo(orientation))
        found[key] = (raw / key).read_bytes()
    return str(raw), found


def ingest(raw: str, out: str, *flags: str) -> str:
    result = run_cli(["pipeline", "--source", raw, "--output", out, "--splits", "train:1", *flags])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def dataset(written, tmp_path_factory) -> str:
    return ingest(written[0], str(tmp_path_factory.mktemp("orientation") / "dataset"))


def stored_records(url: str) -> list[records.ImageRecord]:
    storage, found = Storage(), []
    for shard in read_manifest(storage, url).splits["train"].shards:
        data = storage.read_bytes(join(url, shard.file))
        found += [records.decode_example(r) for r in tfrecord.read_records(io.BytesIO(data))]
    return found


def local_shards(url: str) -> list[str]:
    return [join(url, s.file) for s in read_manifest(Storage(), url).splits["train"].shards]


def test_ingestion_keeps_the_bytes_and_records_the_orientation(written, dataset):
    _, originals = written
    stored = stored_records(dataset)
    assert sorted(r.id for r in stored) == sorted(originals)
    for record in stored:
        assert record.image == originals[record.id]                       # byte-identical
        assert record.orientation == int(record.id.split("-")[1][0])
        assert (record.height, record.width) == as_stored(record.image).shape[:2]
    manifest = read_manifest(Storage(), dataset)
    assert manifest.exif_orientation and manifest.image_shape == [HEIGHT, WIDTH, 3]    # as displayed
    assert manifest.splits["train"].image_sizes.orientations == {str(o): 1 for o in range(2, 9)}


def test_load_gives_upright_pixels(written, dataset, tmp_path):
    from pipeline.dataset.crops import ResizeCrop
    from pipeline.dataset.load import load

    _, originals = written
    ids = [r.id for r in stored_records(dataset)]          # load()'s order: shards in manifest order
    whole = [image.numpy() * 255 for image, _ in load(dataset, "train", cache_dir=str(tmp_path / "a"))]
    crops = [image.numpy() * 255 for image, _ in load(dataset, "train", image_size=(48, 72),
                                                      cache_dir=str(tmp_path / "b"))]
    center = ResizeCrop(48, 72, 3).center_crop
    for key, image, crop in zip(ids, whole, crops):
        assert close(image, upright(originals[key])), key
        assert close(crop, center(tf.constant(upright(originals[key]))).numpy()), key
        if not key.endswith("-1.jpg"):                     # the test can tell a wrong turn
            assert not close(image, as_stored(originals[key])), key


def test_the_trainer_input_gives_upright_pixels(written, dataset):
    from pipeline.dataset.crops import ResizeCrop
    from pipeline.dataset.load import encoded_records, record_ids
    from trainer.input import datasets
    from trainer.input.augment import PhotoAugmentation
    from trainer.input.in_memory import DecodedImages

    _, originals = written
    files = local_shards(dataset)
    ids = [i.decode() for i in record_ids(files).as_numpy_iterator()]
    expected = [upright(originals[key]) for key in ids]
    in_memory = DecodedImages(files, (HEIGHT, WIDTH, 3)).images.numpy()        # images of one size
    sizing = ResizeCrop(HEIGHT, WIDTH, 3)
    evaluation = datasets.eval_dataset(files, sizing.shape, batch_size=8, threads=1, deterministic=True,
                                       sizing=sizing)                            # photos: center crops
    evaluated = next(iter(evaluation))[0].numpy() * 255                         # /255, no statistics
    # Training crops: a box of the whole image (area 1), so the crop is the photo itself.
    whole = PhotoAugmentation(sizing.shape, seed=3, flip=False,
                              sizing=ResizeCrop(HEIGHT, WIDTH, 3, area=(1.0, 1.0), aspect=(0.5, 2.0)))
    trained = [whole(tf.constant(0, tf.int64), tf.constant(i, tf.int64), record)[0].numpy() * 255
               for i, record in enumerate(encoded_records(files, deterministic=True))]
    for key, want, memory, cropped, evaluated_one in zip(ids, expected, in_memory, trained, evaluated):
        assert close(memory, want) and close(cropped, want), key
        assert close(evaluated_one, sizing.center_crop(tf.constant(want)).numpy()), key


def test_the_serving_signature_turns_the_bytes_upright(written, dataset, tmp_path):
    """The client sends the file, not a record: the signature reads the orientation from the
    bytes and predicts what the model gives for the upright pixels load() decodes."""
    from pipeline.dataset.load import load
    from trainer.input.model_input import ModelInput
    from trainer.model import heads
    from trainer.model.models import build_model
    from trainer.results.export import export_model

    _, originals = written
    manifest = read_manifest(Storage(), dataset)
    model_input = ModelInput.of(manifest, (HEIGHT, WIDTH))
    assert model_input.exif_orientation
    model = build_model("linear", model_input.shape, len(manifest.classes))
    export_model(Storage(), model, str(tmp_path / "model"), str(tmp_path / "export"),
                 heads.choose(None, manifest), model_input)
    serve = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    ids = [r.id for r in stored_records(dataset)]          # load()'s order
    served = serve(image_bytes=tf.constant([originals[key] for key in ids]))
    assert [e.decode() for e in served["error"].numpy()] == [""] * len(ids)
    images = np.stack([i.numpy() for i, _ in load(dataset, "train", image_size=(HEIGHT, WIDTH),
                                                  cache_dir=str(tmp_path / "cache"))])
    std = model_input.standardize
    evaluated = tf.nn.softmax(model(std.center(tf.constant(images)), training=False)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), evaluated, atol=1e-5)
    # The same pixels without the tag (a PNG of the stored pixels) are served differently.
    untagged = []
    for key in ids:
        out = io.BytesIO()
        Image.open(io.BytesIO(originals[key])).save(out, format="PNG")
        untagged.append(out.getvalue())
    sideways = serve(image_bytes=tf.constant(untagged))["probabilities"].numpy()
    turned = [i for i, key in enumerate(ids) if not key.endswith("-1.jpg")]
    assert np.abs(sideways[turned] - evaluated[turned]).max(axis=1).min() > 1e-3


def test_ignore_orientation_takes_every_jpeg_as_stored(written, tmp_path):
    from pipeline.dataset.load import load

    _, originals = written
    url = ingest(written[0], str(tmp_path / "dataset"), "--ignore_orientation")
    manifest = read_manifest(Storage(), url)
    assert not manifest.exif_orientation and manifest.image_shape is None      # 64x96 and 96x64
    assert manifest.splits["train"].image_sizes.orientations == {}
    assert all(r.orientation == 1 and r.image == originals[r.id] for r in stored_records(url))
    ids = [r.id for r in stored_records(url)]
    side = min(HEIGHT, WIDTH) * 7 // 8          # the central 87.5 % of the shorter side, resized to itself
    for key, (image, _) in zip(ids, load(url, "train", image_size=side, cache_dir=str(tmp_path / "c"))):
        stored = as_stored(originals[key])
        top, left = (stored.shape[0] - side) // 2, (stored.shape[1] - side) // 2
        assert close(image.numpy() * 255, stored[top:top + side, left:left + side]), key


def test_records_and_manifests_from_before_orientation_still_read(dataset):
    """A record without image/orientation (every dataset published before it) parses as 1, as
    stored; a manifest without max_pixels and exif_orientation reads with the default limit and
    serves images as stored, as its model was trained."""
    from pipeline.dataset import example_proto as pb
    from pipeline.dataset.manifest import Manifest

    full = records.encode_example(records.ImageRecord("x", photo(6), "jpeg", 96, 64, 3, 0, "a", orientation=6))
    example = pb.Example.FromString(full)
    del example.features.feature[records.ORIENTATION]
    older = example.SerializeToString(deterministic=True)
    assert records.decode_example(older).orientation == 1
    assert int(tf.io.parse_single_example(older, records.parse_spec())[records.ORIENTATION]) == 1
    assert int(tf.io.parse_single_example(full, records.parse_spec())[records.ORIENTATION]) == 6
    doc = json.loads(read_manifest(Storage(), dataset).to_json())
    del doc["max_pixels"], doc["exif_orientation"]
    manifest = Manifest.from_json(json.dumps(doc))
    assert manifest.max_pixels == 50_000_000 and not manifest.exif_orientation
