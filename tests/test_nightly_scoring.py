"""The nightly's `score:` step (issue 27): after a promotion the promoted model scores the night's
new images with the real `python -m pipeline.score` (Beam DirectRunner, 2 workers) under the
nightly's supervisor; what a killed run left is removed first, a re-run does not score again."""
import io

import pyarrow.parquet as pq

from infra.nightly import config as nightly_config, scoring
from tests.helpers import png
from tests.test_score import exported

ROOT = "s3://fmnist/nightly-scoring"


def test_the_promoted_model_scores_the_nights_images_once(storage, dataset, tmp_path):
    date = "2026-02-03"
    for n in range(3):
        storage.write_bytes(f"{ROOT}/incoming/{date}/{n}.png", png(28, 28, 1, seed=n))
    exported(storage, dataset, f"{ROOT}/model", str(tmp_path / "export"))
    config = nightly_config.from_dict({
        "name": "fashion", "root": ROOT, "evaluation": {"dataset": dataset},
        "ingest": {"source": "s3://raw/x", "labels_file": "s3://raw/l.csv", "classes": "a,b"},
        "score": {"source": f"{ROOT}/incoming/{{date}}", "args": ["--num_files", "1"]}})
    output = f"{ROOT}/scores/fashion/{date}"
    storage.write_text(f"{output}/predictions-00000-of-00004.parquet", "left by a killed run")
    said = []

    summary = scoring.run(storage, config, date, f"{ROOT}/model", said.append)
    assert summary["output"] == output and summary["rows"] == 3 and summary["errors"] == 0
    files = [url for url, _ in storage.list(output) if url.endswith(".parquet")]
    assert files == summary["files"] == [f"{output}/predictions-00000-of-00001.parquet"]
    rows = pq.read_table(io.BytesIO(storage.read_bytes(files[0]))).to_pylist()
    assert sorted(r["id"] for r in rows) == ["0.png", "1.png", "2.png"] and all(r["error"] == "" for r in rows)
    assert said[-1].startswith(f"nightly: -m pipeline.score --model {ROOT}/model --source {ROOT}/incoming/{date}")

    again = scoring.run(storage, config, date, f"{ROOT}/model", said.append)
    assert again == summary and said[-1] == f"{output} is already scored; not scoring it again"
