"""Batch scoring speed: `python -m pipeline.score` (Beam DirectRunner, --workers worker processes)
against the trainer's own evaluation loop (trainer/input/datasets.eval_dataset and the Keras
model, one process) on the same images and the same model: goal >= 0.8x in images/s.

    python benchmarks/score.py [--images 5000] [--size 28] [--model cnn] [--workers 2]

The images are real Fashion-MNIST pictures saved as RGB JPEGs (benchmarks/ingest.py's
make_images) in the folder-per-class layout on local disk; the job ingests them once (one test
split) so the trainer's loop reads the same images from the shards. The model is the trainer's
export of an untrained --model (speed does not depend on what it learnt). The scoring job is
timed as the command a user runs (imports, worker start-up, model loads and the summary
included); the loop from its first batch, its imports and the model build excluded, so the
ratio is the job's worst case and improves with --images.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.ingest import make_images  # noqa: E402

FEW = 16


def run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ROOT})
    return time.perf_counter() - started


def exported_model(dataset: str, name: str, url: str, local: str):
    from pipeline.dataset.manifest import read_manifest
    from pipeline.dataset.storage import Storage
    from trainer.input.model_input import ModelInput
    from trainer.model import heads
    from trainer.model.models import build_model
    from trainer.results.export import export_model

    manifest = read_manifest(Storage(), dataset)
    model_input = ModelInput.of(manifest, None)
    model = build_model(name, model_input.shape, len(manifest.classes))
    export_model(Storage(), model, url, local, heads.choose(None, manifest), model_input)
    return model, model_input, manifest


def evaluation_loop(dataset: str, model, model_input, manifest, cache: str) -> tuple[float, int]:
    """The trainer's final evaluation on one rank: (seconds, images)."""
    from pipeline.dataset.reader import stage
    from pipeline.dataset.storage import Storage
    from trainer.input.datasets import eval_dataset

    paths = stage(Storage(), dataset, manifest, "test", list(range(len(manifest.splits["test"].shards))), cache)
    started, count = time.perf_counter(), 0
    for images, _ in eval_dataset(paths, model_input.shape, batch_size=256, threads=os.cpu_count(),
                                  standardize=model_input.standardize, sizing=model_input.sizing):
        model(images, training=False).numpy().argmax(axis=1)
        count += len(images)
    return time.perf_counter() - started, count


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--model", default="cnn")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, dataset = os.path.join(tmp, "images"), os.path.join(tmp, "dataset")
        make_images(source, a.images, a.size)
        run(["pipeline", "--source", source, "--output", dataset, "--splits", "test:1.0"])
        model, model_input, manifest = exported_model(dataset, a.model, os.path.join(tmp, "model"),
                                                      os.path.join(tmp, "export"))
        loop, count = evaluation_loop(dataset, model, model_input, manifest, os.path.join(tmp, "cache"))
        score = ["pipeline.score", "--model", os.path.join(tmp, "model"), "--batch_size", "256",
                 "--direct_num_workers", str(a.workers)]
        job = run([*score, "--source", source, "--output", os.path.join(tmp, "scores")])
        make_images(os.path.join(tmp, "few"), FEW, a.size)       # the job's fixed cost: start-up and model loads
        fixed = run([*score, "--source", os.path.join(tmp, "few"), "--output", os.path.join(tmp, "few-scores")])
    steady = (a.images - FEW) / max(job - fixed, 1e-9)
    print(f"{count} images {a.size}x{a.size}, model {a.model}: trainer evaluation loop {count / loop:,.0f} "
          f"images/s ({loop:.1f} s); pipeline.score {a.images / job:,.0f} images/s ({job:.1f} s, {a.workers} "
          f"workers, start-up included): {loop / job:.2f}x (goal >= 0.8x); without its fixed cost "
          f"({fixed:.1f} s for {FEW} images) {steady:,.0f} images/s: {steady / (count / loop):.2f}x")

if __name__ == "__main__":
    main()
