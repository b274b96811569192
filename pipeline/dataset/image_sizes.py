"""What a split's images look like, sizes and all: the manifest's `image_sizes`.

Photos keep their own sizes (ingestion does not resize unless asked), so one `image_shape` no
longer describes a dataset. Each shard counts its images by height, by width, by format and by
channel count; publish adds the shards' counts up (pipeline/elements.py) and keeps this summary
per split. Counting by value keeps what a shard returns bounded by the largest side (a few
thousand values), not by the number of images. The trainer reads it to pick its preprocessing
(crops.py)."""
from __future__ import annotations

import dataclasses

__all__ = ["ImageSizeError", "ImageSizes", "spread"]


class ImageSizeError(ValueError):
    """Photos whose manifest cannot say which size to use (the trainer: one line, exit 2)."""


@dataclasses.dataclass(frozen=True)
class ImageSizes:
    height: tuple[int, int, int]            # min, median, max
    width: tuple[int, int, int]
    formats: dict[str, int]                 # {"jpeg": n, "png": n}
    channels: dict[str, int]                # {"1": n, "3": n}

    @classmethod
    def from_counts(cls, heights: dict, widths: dict, formats: dict, channels: dict) -> "ImageSizes":
        return cls(spread(heights), spread(widths), {k: formats[k] for k in sorted(formats)},
                   {str(k): channels[k] for k in sorted(channels, key=int)})

    def to_json(self) -> dict:
        return {"height": {"min": self.height[0], "median": self.height[1], "max": self.height[2]},
                "width": {"min": self.width[0], "median": self.width[1], "max": self.width[2]},
                "formats": self.formats, "channels": self.channels}

    @classmethod
    def from_json(cls, doc: dict | None) -> "ImageSizes | None":
        if not doc:
            return None
        side = lambda d: (d["min"], d["median"], d["max"])   # noqa: E731
        return cls(side(doc["height"]), side(doc["width"]), dict(doc["formats"]), dict(doc["channels"]))

    @property
    def fixed(self) -> bool:
        """Every image of the split has one height and one width."""
        return self.height[0] == self.height[2] and self.width[0] == self.width[2]


def spread(counts: dict) -> tuple[int, int, int]:
    """(min, median, max) of values given as {value: how many}; the lower median."""
    values = sorted((int(v), n) for v, n in counts.items() if n)
    if not values:
        return (0, 0, 0)
    half, seen = (sum(n for _, n in values) - 1) // 2, 0
    for value, n in values:
        seen += n
        if seen > half:
            return (values[0][0], value, values[-1][0])
    raise AssertionError("unreachable")

