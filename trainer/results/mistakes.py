"""mistakes.png: the most confident wrong test predictions, as a grid of thumbnails (batch_grid's
drawing), each captioned with its true and predicted class and the probability the model gave
its prediction; one picture per head (`mistakes_<attribute>.png` for several).

Drawn from predictions.parquet, read a batch at a time keeping the TILES most confident wrong
rows, and the dataset's index (pipeline/dataset/index.py), which says where each of those
records is: each image is read alone by ranged reads, never its shard. Bounded whatever the
size of the test split or the number of classes. A dataset without an index (published before
it, or with --no_index) gets grey tiles with the captions."""
from __future__ import annotations

import heapq
import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.dataset import records
from pipeline.dataset.index import load_index, read_record
from trainer.results.batch_grid import TILES, grid

THUMB = 96                        # pixels of a tile's side


def most_confident_wrong(path: str, head: str, count: int = TILES) -> list[dict]:
    """The `count` wrong rows of `head` with the highest probability, highest first."""
    kept: list = []
    columns = ["head", "id", "label_name", "predicted_name", "probability", "correct"]
    for batch in pq.ParquetFile(path).iter_batches(65_536, columns=columns):
        for row in batch.filter(pc.and_(pc.equal(batch.column("head"), head),
                                        pc.invert(batch.column("correct")))).to_pylist():
            item = (row["probability"], row["id"], row)
            if len(kept) < count:
                heapq.heappush(kept, item)
            elif item[:2] > kept[0][:2]:
                heapq.heapreplace(kept, item)
    return [row for _, _, row in sorted(kept, key=lambda k: (-k[0], k[1]))]


def thumbnails(storage, dataset: str, version: str | None, ids: list[str], cache_dir: str) -> dict[str, np.ndarray]:
    """{id: THUMB x THUMB x 3 uint8} of these test records, each read alone through the index;
    {} for a dataset without an index, or no ids."""
    if not ids:
        return {}
    try:
        index = load_index(dataset, version, splits=("test",), storage=storage, cache_dir=cache_dir)
    except FileNotFoundError:
        return {}
    wanted = pc.field("id").isin(pa.array(ids, pa.string()))
    where = index.to_table(filter=wanted, columns=["id", "shard", "offset"]).to_pylist()
    return {row["id"]: thumbnail(records.decode_example(
        read_record(storage, dataset, version, row["shard"], row["offset"]))) for row in where}


def thumbnail(record: records.ImageRecord) -> np.ndarray:
    """The record's image upright, fitted into a white THUMB x THUMB square."""
    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(record.image))
    if record.orientation != 1:
        image = ImageOps.exif_transpose(image)
    image.thumbnail((THUMB, THUMB))
    square = Image.new("RGB", (THUMB, THUMB), "white")
    square.paste(image.convert("RGB"), ((THUMB - image.width) // 2, (THUMB - image.height) // 2))
    return np.asarray(square)


def draw(rows: list[dict], pictures: dict[str, np.ndarray], path: str) -> str:
    """The grid of `rows` (most_confident_wrong's), saved at `path`."""
    grey = np.full((THUMB, THUMB, 3), 200, np.uint8)
    if not rows:                              # nothing wrong: one blank tile says so
        grid(grey[np.newaxis], ["no mistakes"]).save(path)
        return path
    images = np.stack([pictures.get(row["id"], grey) for row in rows])
    captions = [f"true {row['label_name']}\npred {row['predicted_name']}\np {row['probability']:.3f}" for row in rows]
    grid(images, captions, lines=3).save(path)
    return path


def mistakes_png(storage, predictions_path: str, head: str, dataset: str, version: str | None,
                 path: str, cache_dir: str) -> str:
    rows = most_confident_wrong(predictions_path, head)
    return draw(rows, thumbnails(storage, dataset, version, [r["id"] for r in rows], cache_dir), path)
