"""Score committed SavedModels on one fixed split of a published dataset, in this process.

The new model and the promoted one are scored by the same code on the same records, so the
promotion decision compares like with like (the trainer's own report scores the new span's test
split, which changes every night).
"""
from __future__ import annotations

import os
import shutil

from pipeline.dataset.local_paths import path_under, relative_key
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage, join
from trainer.results import predictions


class UnusableModel(Exception):
    """No committed SavedModel with a serving signature at the URL; the message says which."""


def fetch_model(storage: Storage, model_url: str, local_dir: str) -> str:
    if not storage.exists(join(model_url, "COMMITTED")):
        raise UnusableModel(f"no committed SavedModel at {model_url}")
    shutil.rmtree(local_dir, ignore_errors=True)
    for url, _ in storage.list(model_url):      # keys are the bucket's: refused if they leave local_dir
        storage.download(url, path_under(local_dir, relative_key(model_url, url)))
    return local_dir


def score(storage: Storage, model_urls: dict[str, str], dataset_url: str, split: str,
          cache_dir: str, predictions_url: str | None = None) -> dict[str, dict]:
    """{label: metrics} for each model (accuracy, macro_f1, examples, per-class, confusion).

    Each model is scored through its serving signature (encoded image bytes in, probabilities
    out), i.e. exactly as it will be served, with its own decoding and standardisation; the
    records' original bytes come straight from the evaluation split's shards. With
    `predictions_url` (a folder), each model's rows also go to predictions-<label>.parquet there
    (trainer/results/predictions.py's table), its URL in the metrics as `predictions`."""
    import numpy as np
    from trainer.banners import imported_quietly     # (trainer/__init__.py sets TensorFlow's variables)

    with imported_quietly():
        import tensorflow as tf
    from pipeline.dataset import records
    from pipeline.dataset.reader import stage
    from trainer.results import metrics as evaluate

    manifest = read_manifest(storage, dataset_url)
    if split not in manifest.splits or manifest.splits[split].num_records == 0:
        raise ValueError(f"evaluation dataset {dataset_url} has no records in split {split!r} "
                         f"(splits: {', '.join(sorted(manifest.splits))})")
    paths = stage(storage, dataset_url, manifest, split,
                  list(range(len(manifest.splits[split].shards))), os.path.join(cache_dir, "eval-data"))
    spec = {key: value for key, value in records.parse_spec().items()
            if key in (records.IMAGE, records.LABEL, records.ID)}
    examples = (tf.data.TFRecordDataset(paths).map(lambda s: tf.io.parse_single_example(s, spec))
                .batch(256).prefetch(tf.data.AUTOTUNE))
    results = {}
    for label, model_url in model_urls.items():
        local = fetch_model(storage, model_url, os.path.join(cache_dir, "eval-models", label))
        serve = serving_signature(tf.saved_model.load(local), model_url)
        table = rows_writer(storage, predictions_url, label, cache_dir)
        matrix = np.zeros((len(manifest.classes),) * 2, dtype=np.int64)
        refused = 0
        for batch in examples:
            served = serve(image_bytes=batch[records.IMAGE])
            probabilities = served["probabilities"].numpy()
            truth = batch[records.LABEL].numpy()
            # An image the model refuses to decode (its header: too many pixels, not an image)
            # has no class: counted apart, not as a prediction of class 0, and not in the table.
            decoded = served["error"].numpy() == b"" if "error" in served else np.ones(len(truth), bool)
            refused += int((~decoded).sum())
            np.add.at(matrix, (truth[decoded], np.argmax(probabilities, axis=1)[decoded]), 1)
            if table:
                table.write(predictions.scored_rows("label", manifest.classes, predictions.texts(
                    batch[records.ID].numpy()[decoded]), truth[decoded], probabilities[decoded],
                    probabilities[decoded]))
        result = evaluate.metrics(matrix, manifest.classes)
        result["refused"] = refused
        f1s = [c["f1"] for c in result["per_class"].values()]
        result["macro_f1"] = round(sum(f1s) / len(f1s), 4) if f1s else 0.0
        if table:
            table.close()
            result["predictions"] = table.url
        results[label] = result
    return results


def rows_writer(storage: Storage, folder: str | None, label: str, cache_dir: str):
    """Where one model's predictions go (None: nowhere); kept locally for `compared`."""
    if not folder:
        return None
    return predictions.PartWriter(storage, os.path.join(cache_dir, "eval-predictions"),
                                  join(folder, f"predictions-{label}.parquet"), keep=True)


def compared(results: dict[str, dict], cache_dir: str, first: str = "new", second: str = "promoted") -> dict:
    """Per class, how many images each of two scored models got right that the other got wrong
    (from the local copies of their predictions); {} unless both were scored with predictions."""
    if "predictions" not in results.get(first, {}) or "predictions" not in results.get(second, {}):
        return {}
    local = os.path.join(cache_dir, "eval-predictions")
    return predictions.compare(os.path.join(local, f"predictions-{first}.parquet"),
                               os.path.join(local, f"predictions-{second}.parquet"), (first, second))


def serving_signature(loaded, model_url: str):
    signature = loaded.signatures.get("serving_default")
    if signature is None or "image_bytes" not in signature.structured_input_signature[1]:
        raise UnusableModel(f"{model_url} has no serving_default(image_bytes) signature "
                                "(exported by a trainer older than its export.py)")
    return signature
