"""The peer of benchmarks/ingest.py: TensorFlow Datasets' own Beam writer over the same folder of
JPEGs (<source>/<class>/<image>.jpg), a minimal builder run with the same Beam runner and worker
count. TFDS's Image feature stores each file's bytes as they are (read, not decoded: 4.9.9's
encode_image_or_path), shuffles the examples by hashed key through a GroupByKey and writes
TFRecord shards with its dataset_info: no decode check, quarantine, dedupe or pixel statistics,
all of which our job does.

Run by benchmarks/ingest.py (TFDS needs the builder inside a package, not in __main__)."""
from __future__ import annotations

import os
import time

import tensorflow_datasets as tfds


def example(path: str):
    """(key, features) of one image: the class is its folder's name."""
    return os.path.relpath(path, os.path.dirname(os.path.dirname(path))), {
        "image": path, "label": os.path.basename(os.path.dirname(path))}


class FolderJpegs(tfds.core.GeneratorBasedBuilder):
    """Every JPEG of a folder-per-class tree, one split."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, source: str, **kwargs):
        self.source = source
        self.classes = sorted(os.listdir(source))
        super().__init__(**kwargs)

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=self.classes)}))

    def _split_generators(self, dl_manager):
        paths = sorted(os.path.join(self.source, c, name) for c in self.classes
                       for name in os.listdir(os.path.join(self.source, c)))
        return {"train": self._generate_examples(paths)}

    def _generate_examples(self, paths):
        beam = tfds.core.lazy_imports.apache_beam
        return beam.Create(paths) | beam.Map(example)


def build(source: str, data_dir: str, workers: int) -> float:
    """Seconds to prepare the dataset (the runner's start-up included)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(runner="DirectRunner", direct_running_mode="multi_processing",
                              direct_num_workers=workers)
    started = time.perf_counter()
    FolderJpegs(source=source, data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(beam_options=options))
    return time.perf_counter() - started
