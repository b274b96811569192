"""The final model as a SavedModel whose serving signature takes encoded image bytes.

serving_default: image_bytes (string [N], PNG/JPEG/GIF/BMP) -> probabilities (float [N, C]),
class (string [N], the most probable class name) and classes (string [N, C], the names in the
order of probabilities). Decoding, sizing and standardisation are those of training.
A model with several heads (--heads) returns the three per attribute instead:
<attribute>_probabilities, <attribute>_class and <attribute>_classes."""
from __future__ import annotations

import os
import shutil

import tensorflow as tf

from pipeline.dataset.load import decode_image
from pipeline.dataset.storage import Storage, join
from trainer.input.model_input import ModelInput
from trainer.model.heads import by_head


def serving_function(model, heads: list, model_input: ModelInput):
    """`heads`: the run's heads (trainer/model/heads.py); each one's outputs are named with its prefix.
    `model_input`: training's shape and standardisation, and for photos the evaluation's center
    crop, so served predictions equal evaluated ones."""
    shape, sizing, standardize = model_input.shape, model_input.sizing, model_input.standardize

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        images = tf.map_fn(lambda encoded: decode_image(encoded, shape, sizing), image_bytes,
                           fn_output_signature=tf.TensorSpec(shape, tf.float32 if sizing else tf.uint8))
        logits = by_head(heads, model(standardize.center(standardize.scale(images)), training=False))
        return {f"{h.prefix}{key}": value for h in heads
                for key, value in predictions(logits[h.name], h.classes).items()}
    return serve


def predictions(logits, classes: list[str]) -> dict:
    names = tf.constant(classes)
    probabilities = tf.nn.softmax(logits)
    return {"probabilities": probabilities,
            "class": tf.gather(names, tf.argmax(probabilities, axis=1)),
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
