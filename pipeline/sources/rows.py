"""The row: what every source yields, one dict per input image.

    {"id": str, "source": where it came from (for quarantine entries), "url": str | None,
     "image": bytes | None (inline bytes, else read from url), "size": int (bytes, estimated),
     "label": str | None (class name), "split": str ("" = hash of id),
     "attributes": {name: (value, number_of_values)} (attribute-file layout only),
     "labels_at": where its labels row is, for the label check's entries (Parquet labels only)}
"""
from __future__ import annotations

QUARANTINE = "quarantine"          # the tag of every step's side output of rejected inputs


def image_row(key: str, url: str, size: int, label: str | None = None, split: str = "",
              attributes: dict | None = None, labels_at: str | None = None) -> dict:
    row = {"id": key, "source": url, "url": url, "image": None, "size": size, "label": label,
           "split": split, "attributes": attributes or {}}
    if labels_at:
        row["labels_at"] = labels_at
    return row
