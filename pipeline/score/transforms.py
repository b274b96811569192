"""The steps of batch scoring, each a composite transform or a DoFn:

    ReadImages   PBegin -> Image per file under the source (listed as ingestion lists it), or
                 per row of a Cassandra table (read as ingestion reads it)
    Predict      [Image] (a batch) -> rows (table.py), the model loaded once per worker
    WriteFiles   rows -> the URLs of the Parquet files written

Image bytes go from the worker that reads them to the model on that same worker (fused steps);
only file keys are spread between workers before reading, and only rows are grouped by file."""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import zlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.dataset.local_paths import path_under, relative_key
from pipeline.dataset.storage import Storage, join
from pipeline.score import table
from pipeline.sources.cassandra.read import ReadRows
from pipeline.sources.listing import ListAllFiles

__all__ = ["ReadImages", "Predict", "WriteFiles", "Image", "fetch_model", "file_url"]

# What the ingestion layouts keep beside images (labels files, attribute files, class lists):
# not images, so not scored.
NOT_IMAGES = (".csv", ".jsonl", ".parquet", ".txt", ".json")


@dataclasses.dataclass(frozen=True)
class Image:
    """One file to score: its bytes, or why there are none."""
    key: str                    # under --source: the row's id
    url: str
    data: bytes | None
    error: str = ""


class ReadImages(beam.PTransform):
    """PBegin -> Image per file under `source`, label files left out, or per row of a Cassandra
    table (`cassandra`: its CassandraConfig, read by the ingestion's ReadRows); an object over
    the byte cap (or one that cannot be read) is an Image with its error and no bytes."""

    def __init__(self, storage: Storage, source: str, max_bytes: int, cassandra=None):
        super().__init__()
        self.storage, self.source, self.max_bytes, self.cassandra = storage, source, max_bytes, cassandra

    def expand(self, pbegin):
        if self.cassandra:
            return (pbegin | "ReadRows" >> ReadRows(self.cassandra)
                           | "AsImages" >> beam.Map(row_image, self.max_bytes))
        files, unread = pbegin | "List" >> ListAllFiles(self.storage, self.source, (), self.max_bytes)
        images = (files | "LeaveOutLabelFiles" >> beam.Filter(lambda f: not f[0].lower().endswith(NOT_IMAGES))
                        | "Spread" >> beam.Reshuffle()          # (key, (url, size)): keys only, no bytes
                        | "Read" >> beam.ParDo(ReadBytes(self.storage, self.max_bytes)))
        refused = unread | "Refused" >> beam.Map(lambda e: Image(e["id"], e["source"], None, e["reason"]))
        return (images, refused) | "AllImages" >> beam.Flatten()


def row_image(row: dict, max_bytes: int) -> Image:
    """A Cassandra row (pipeline/sources/rows.py's shape) as an Image; over the cap, its error."""
    if len(row["image"]) > max_bytes:
        return Image(row["id"], row["source"], None, f"image is {len(row['image']):,} bytes, over "
                                                      f"--max_image_bytes {max_bytes:,}; not scored")
    return Image(row["id"], row["source"], row["image"])


class ReadBytes(beam.DoFn):
    """(key, (url, size)) -> Image, never more than the byte cap read."""

    def __init__(self, storage: Storage, max_bytes: int):
        self.storage, self.max_bytes = storage, max_bytes
        self.unread = Metrics.counter("score", "unread")

    def process(self, element):
        key, (url, _) = element
        try:
            yield Image(key, url, self.storage.read_bytes(url, self.max_bytes))
        except Exception as e:          # gone, grown past the cap, refused: that image's error
            self.unread.inc()
            yield Image(key, url, None, f"not read: {type(e).__name__}: {e}")


def fetch_model(storage: Storage, model_url: str, local_dir: str) -> str:
    """A committed SavedModel's files into `local_dir` (each name checked to stay inside it)."""
    if not storage.exists(join(model_url, "COMMITTED")):
        raise FileNotFoundError(f"--model {model_url}: no committed SavedModel there (no COMMITTED marker)")
    for url, _ in storage.list(model_url):
        storage.download(url, path_under(local_dir, relative_key(model_url, url)))
    return local_dir


class Predict(beam.DoFn):
    """[Image] -> rows: the model's serving signature on the batch's encoded bytes. The model
    is fetched and loaded in setup, once per DoFn instance (Beam keeps one per worker thread and
    reuses it across bundles), never per batch."""

    def __init__(self, storage: Storage, model_url: str):
        self.storage, self.model_url = storage, model_url
        self.scored = Metrics.counter("score", "scored")
        self.failed = Metrics.counter("score", "errors")

    def setup(self):
        import tensorflow as tf

        self.local = fetch_model(self.storage, self.model_url, tempfile.mkdtemp(prefix="score-model-"))
        self.serve = tf.saved_model.load(self.local).signatures["serving_default"]
        # Heads by their outputs: "probabilities", or "<attribute>_probabilities" for several.
        self.heads = sorted(k[: -len("probabilities")] for k in self.serve.structured_outputs
                            if k.endswith("probabilities"))

    def teardown(self):
        shutil.rmtree(getattr(self, "local", ""), ignore_errors=True)

    def process(self, batch: list[Image]):
        for image in batch:
            if image.error:
                self.failed.inc()
                yield table.failed(image.key, image.url, image.error)
        good = [image for image in batch if not image.error]
        if good:
            yield from self.rows(good)

    def rows(self, images: list[Image]):
        import tensorflow as tf

        try:
            outputs = {k: v.numpy() for k, v in self.serve(image_bytes=tf.constant([i.data for i in images])).items()}
        except tf.errors.OpError as e:
            # A body that fails to decode past a good header fails the whole call: each image
            # alone then, so only that one gets the error.
            if len(images) > 1:
                for image in images:
                    yield from self.rows([image])
                return
            self.failed.inc()
            yield table.failed(images[0].key, images[0].url, f"cannot decode: {e.message}")
            return
        for n, image in enumerate(images):
            error = outputs["error"][n].decode()
            if error:
                self.failed.inc()
                yield table.failed(image.key, image.url, error)
                continue
            self.scored.inc()
            for prefix in self.heads:
                classes = [c.decode() for c in outputs[f"{prefix}classes"][n]]
                yield table.scored(image.key, image.url, prefix.rstrip("_") or "label",
                                   outputs[f"{prefix}probabilities"][n], classes)


def file_url(output: str, number: int, count: int) -> str:
    return join(output, f"predictions-{number:05d}-of-{count:05d}.parquet")


class WriteFiles(beam.PTransform):
    """rows -> URLs of `count` Parquet files under `output`: a row's file chosen by a hash of its
    id (an image's heads share a file); each file written whole by the worker that gets its
    rows, which holds them (a few hundred bytes each) until it is written."""

    def __init__(self, storage: Storage, output: str, count: int):
        super().__init__()
        self.storage, self.output, self.count = storage, output, count

    def expand(self, rows):
        count = self.count
        return (rows | "ByFile" >> beam.Map(lambda r: (zlib.crc32(r["id"].encode()) % count, r))
                     | "GroupByFile" >> beam.GroupByKey()              # (file number, [row])
                     | "Write" >> beam.ParDo(WriteFile(self.storage, self.output, count)))


class WriteFile(beam.DoFn):
    """(file number, [row]) -> its URL, the file written whole (never seen half-written)."""

    def __init__(self, storage: Storage, output: str, count: int):
        self.storage, self.output, self.count = storage, output, count

    def process(self, element):
        import pyarrow.parquet as pq

        number, rows = element
        url = file_url(self.output, number, self.count)
        with self.storage.writing(url) as path:
            pq.write_table(table.table(list(rows)), path)
        yield url
