"""The nightly's evaluation writes predictions.parquet for the new and the promoted model on its
fixed split, and says per class how many images each got right that the other got wrong
(issue 27). Real parts: two SavedModels exported by the trainer's own export code (untrained
linear models of different seeds: they disagree on many images), the session's dataset published
by the real Beam job on the S3 server, scored through their serving signatures."""
import io
from collections import Counter

import numpy as np
import pyarrow.parquet as pq

from infra.nightly import evaluate
from pipeline.dataset import load_index
from pipeline.dataset.manifest import read_manifest
from pipeline.dataset.storage import Storage
from tests.test_predictions import agrees_with

MODELS = "s3://fmnist/nightly-predictions/models"
OUT = "s3://fmnist/nightly-predictions/runs/2026-01-01"


def exported(dataset: str, url: str, seed: int, local: str) -> str:
    from trainer.input.model_input import ModelInput
    from trainer.keras import keras
    from trainer.model import heads
    from trainer.model.models import build_model
    from trainer.results.export import export_model

    manifest = read_manifest(Storage(), dataset)
    model_input = ModelInput.of(manifest, None)
    keras.utils.set_random_seed(seed)
    model = build_model("linear", model_input.shape, len(manifest.classes))
    export_model(Storage(), model, url, local, heads.choose(None, manifest), model_input)
    return url


def test_both_models_predictions_and_who_got_right_what_the_other_got_wrong(storage, dataset, tmp_path):
    models = {"new": exported(dataset, f"{MODELS}/a", 1, str(tmp_path / "a")),
              "promoted": exported(dataset, f"{MODELS}/b", 2, str(tmp_path / "b"))}
    cache = str(tmp_path / "cache")
    scores = evaluate.score(storage, models, dataset, "test", cache, OUT)
    classes = read_manifest(storage, dataset).classes
    test_ids = sorted(load_index(dataset, splits=("test",), cache_dir=str(tmp_path / "index"))
                      .to_table().column("id").to_pylist())
    tables = {}
    for label, result in scores.items():
        assert result["predictions"] == f"{OUT}/predictions-{label}.parquet"
        tables[label] = pq.read_table(io.BytesIO(storage.read_bytes(result["predictions"])))
        agrees_with(tables[label], result, classes)
        assert sorted(tables[label].column("id").to_pylist()) == test_ids

    correct = {label: {r["id"]: (r["label_name"], r["correct"]) for r in t.to_pylist()} for label, t in tables.items()}
    expected = {name: {"new": 0, "promoted": 0} for name in {c for c, _ in correct["new"].values()}}
    for image, (name, right) in correct["new"].items():
        other = correct["promoted"][image][1]
        expected[name]["new"] += right and not other
        expected[name]["promoted"] += other and not right
    compared = evaluate.compared(scores, cache)
    assert compared == expected
    assert list(compared) == sorted(compared, key=classes.index)          # in label order
    totals = Counter()
    for counts in compared.values():
        totals.update(counts)
    assert totals["new"] > 0 and totals["promoted"] > 0, "two random models that never disagree"
    assert evaluate.compared({"new": scores["new"]}, cache) == {}         # nothing promoted yet


def test_the_nights_report_says_who_got_right_what_the_other_got_wrong(storage, dataset, tmp_path):
    from infra.nightly import config as nightly_config
    from infra.nightly.night import Night

    a = exported(dataset, f"{MODELS}/a", 1, str(tmp_path / "a"))
    b = exported(dataset, f"{MODELS}/b", 2, str(tmp_path / "b"))
    config = nightly_config.from_dict({
        "name": "fashion", "root": "s3://fmnist/nightly-predictions", "evaluation": {"dataset": dataset},
        "ingest": {"source": "s3://raw/x", "labels_file": "s3://raw/l.csv", "classes": "a,b"}})
    night = Night(config, "2026-01-02", storage, str(tmp_path / "cache"))
    new, old = night.evaluate(a, {"model_dir": b, "version": "2026-01-01"})
    evaluation = night.report["evaluation"]
    runs = "s3://fmnist/nightly-predictions/models/fashion/runs/2026-01-02"
    assert evaluation["new"]["predictions"] == f"{runs}/predictions-new.parquet"
    assert evaluation["promoted"]["predictions"] == f"{runs}/predictions-promoted.parquet"
    tables = {label: pq.read_table(io.BytesIO(storage.read_bytes(evaluation[label]["predictions"])))
              for label in ("new", "promoted")}
    assert [new, old] == [float(np.mean(tables[label].column("correct").to_numpy())) for label in ("new", "promoted")]
    right = {label: {r["id"] for r in t.to_pylist() if r["correct"]} for label, t in tables.items()}
    counted = evaluation["right_where_other_wrong"]
    assert sum(c["new"] for c in counted.values()) == len(right["new"] - right["promoted"])
    assert sum(c["promoted"] for c in counted.values()) == len(right["promoted"] - right["new"])
