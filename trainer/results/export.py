"""The final model as a SavedModel whose serving signature takes encoded image bytes.

serving_default: image_bytes (string [N], PNG/JPEG/GIF/BMP) -> probabilities (float [N, C]),
class (string [N], the most probable class name), classes (string [N, C], the names in the
order of probabilities) and error (string [N]: "" or why that image was not decoded). Decoding,
sizing and standardisation are those of training; a JPEG is turned upright by the EXIF
orientation in its bytes when the training records were (the manifest's exif_orientation).
An image whose header declares more pixels than the dataset's max_pixels, or bytes that are no
PNG/JPEG/GIF/BMP, are not decoded: that item gets its error, zero probabilities and class "",
and the rest of the batch its predictions (issue 26). A model with several heads (--heads)
returns the three per attribute instead: <attribute>_probabilities, <attribute>_class and
<attribute>_classes, and one error."""
from __future__ import annotations

import os
import shutil

import tensorflow as tf

from pipeline.dataset import headers
from pipeline.dataset.load import decode_image
from pipeline.dataset.storage import Storage, join
from trainer.input.model_input import ModelInput
from trainer.model.heads import by_head


def serving_function(model, heads: list, model_input: ModelInput):
    """`heads`: the run's heads (trainer/model/heads.py); each one's outputs are named with its prefix.
    `model_input`: training's shape and standardisation, and for photos the evaluation's center
    crop, so served predictions equal evaluated ones."""
    standardize = model_input.standardize

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        images, errors = served_images(image_bytes, model_input)
        logits = by_head(heads, model(standardize.center(standardize.scale(images)), training=False))
        decoded = tf.equal(errors, "")
        outputs = {f"{h.prefix}{key}": value for h in heads
                   for key, value in predictions(logits[h.name], h.classes, decoded).items()}
        return {**outputs, "error": errors}
    return serve


def served_images(image_bytes, model_input: ModelInput):
    """(images as evaluation decodes them, errors): each item's header checked before it is
    decoded; a refused item is a blank image and its reason."""
    shape, sizing = model_input.shape, model_input.sizing
    blank = tf.zeros(shape, tf.float32 if sizing else tf.uint8)

    def one(encoded):
        error = headers.size_error(encoded, model_input.max_pixels)
        turn = headers.exif_orientation(encoded) if model_input.exif_orientation else 1
        image = tf.cond(tf.equal(error, ""),
                        lambda: decode_image(encoded, shape, sizing, turn, model_input.max_pixels),
                        lambda: blank)
        return tf.ensure_shape(image, shape), error

    return tf.map_fn(one, image_bytes, fn_output_signature=(
        tf.TensorSpec(shape, blank.dtype), tf.TensorSpec([], tf.string)))


def predictions(logits, classes: list[str], decoded) -> dict:
    """Probabilities, the most probable class and the class names; zeros and "" for the items
    not `decoded`."""
    names = tf.constant(classes)
    probabilities = tf.where(decoded[:, tf.newaxis], tf.nn.softmax(logits), 0.0)
    return {"probabilities": probabilities,
            "class": tf.where(decoded, tf.gather(names, tf.argmax(probabilities, axis=1)), ""),
            "classes": tf.tile(names[tf.newaxis], [tf.shape(probabilities)[0], 1])}


def export_model(storage: Storage, model, url: str, local_root: str, heads: list,
                 model_input: ModelInput) -> None:
    """SavedModel to local disk, upload every file, then a COMMITTED marker last."""
    local = os.path.join(local_root, "model")
    shutil.rmtree(local, ignore_errors=True)
    model.save(local, include_optimizer=False, save_format="tf",
               signatures={"serving_default": serving_function(model, heads, model_input)})
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            storage.upload(path, join(url, os.path.relpath(path, local)))
    storage.write_text(join(url, "COMMITTED"), "")
