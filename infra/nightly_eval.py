"""Score committed SavedModels on one fixed split of a published dataset, in this process.

The new model and the promoted one are scored by the same code on the same records, so the
promotion decision compares like with like (the trainer's own report scores the new span's test
split, which changes every night).
"""
from __future__ import annotations

import os
import shutil

from pipeline.manifest import read_manifest
from pipeline.storage import Storage, join


class ModelNotCommitted(Exception):
    """The model directory has no COMMITTED marker: it is incomplete or absent."""


def fetch_model(storage: Storage, model_url: str, local_dir: str) -> str:
    if not storage.exists(join(model_url, "COMMITTED")):
        raise ModelNotCommitted(f"no committed SavedModel at {model_url}")
    shutil.rmtree(local_dir, ignore_errors=True)
    prefix = model_url.rstrip("/") + "/"
    for url, _ in storage.list(model_url):
        storage.download(url, os.path.join(local_dir, url[len(prefix):]))
    return local_dir


def score(storage: Storage, model_urls: dict[str, str], dataset_url: str, split: str,
          cache_dir: str) -> dict[str, dict]:
    """{label: metrics} for each model (accuracy, macro_f1, examples, per-class, confusion)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from trainer import data, evaluate

    manifest = read_manifest(storage, dataset_url)
    if split not in manifest.splits or manifest.splits[split].num_records == 0:
        raise ValueError(f"evaluation dataset {dataset_url} has no records in split {split!r} "
                         f"(splits: {', '.join(sorted(manifest.splits))})")
    paths = data.stage(storage, dataset_url, manifest, split,
                       list(range(len(manifest.splits[split].shards))), os.path.join(cache_dir, "eval-data"))
    results = {}
    for label, model_url in model_urls.items():
        local = fetch_model(storage, model_url, os.path.join(cache_dir, "eval-models", label))
        model = tf.keras.models.load_model(local, compile=False)
        dataset = data.eval_dataset(paths, tuple(manifest.image_shape), batch_size=256,
                                    threads=os.cpu_count() or 1)
        matrix = evaluate.confusion_matrix(model, dataset, len(manifest.classes))
        result = evaluate.metrics(matrix, manifest.classes)
        f1s = [c["f1"] for c in result["per_class"].values()]
        result["macro_f1"] = round(sum(f1s) / len(f1s), 4) if f1s else 0.0
        results[label] = result
    return results
