"""What a split's images look like, sizes and all: the manifest's `image_sizes`.

Photos keep their own sizes (ingestion does not resize unless asked), so one `image_shape` no
longer describes a dataset. Each shard counts its images by height, by width, by format and by
channel count; publish adds the shards' counts up (pipeline/elements.py) and keeps this summary
per split. Counting by value keeps what a shard returns bounded by the largest side (a few
thousand values), not by the number of images. The trainer reads it to pick its preprocessing
(crops.py)."""
from __future__ import annotations

import dataclasses

__all__ = ["MAX_PIXELS", "ImageSizeError", "ImageSizes", "displayed", "spread"]

# Images with more pixels are refused: at ingestion (--max_pixels, quarantined), and when a
# reader or the serving signature decodes (the manifest's max_pixels), checked on the header.
MAX_PIXELS = 50_000_000


class ImageSizeError(ValueError):
    """Photos whose manifest cannot say which size to use (the trainer: one line, exit 2)."""


@dataclasses.dataclass(frozen=True)
class ImageSizes:
    height: tuple[int, int, int]            # min, median, max
    width: tuple[int, int, int]
    formats: dict[str, int]                 # {"jpeg": n, "png": n}
    channels: dict[str, int]                # {"1": n, "3": n}
    # Photos a person sees turned (EXIF orientation 2-8: {"6": n}); height and width above are
    # as displayed, i.e. after turning. Empty when none is (and in older manifests).
    orientations: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_counts(cls, heights: dict, widths: dict, formats: dict, channels: dict,
                    orientations: dict | None = None) -> "ImageSizes":
        turned = {str(k): n for k, n in sorted((orientations or {}).items(), key=lambda kv: int(kv[0]))
                  if int(k) != 1 and n}
        return cls(spread(heights), spread(widths), {k: formats[k] for k in sorted(formats)},
                   {str(k): channels[k] for k in sorted(channels, key=int)}, turned)

    def to_json(self) -> dict:
        doc = {"height": {"min": self.height[0], "median": self.height[1], "max": self.height[2]},
               "width": {"min": self.width[0], "median": self.width[1], "max": self.width[2]},
               "formats": self.formats, "channels": self.channels}
        if self.orientations:
            doc["orientations"] = self.orientations
        return doc

    @classmethod
    def from_json(cls, doc: dict | None) -> "ImageSizes | None":
        if not doc:
            return None
        side = lambda d: (d["min"], d["median"], d["max"])   # noqa: E731
        return cls(side(doc["height"]), side(doc["width"]), dict(doc["formats"]), dict(doc["channels"]),
                   dict(doc.get("orientations", {})))

    @property
    def fixed(self) -> bool:
        """Every image of the split has one height and one width."""
        return self.height[0] == self.height[2] and self.width[0] == self.width[2]


def displayed(height: int, width: int, orientation: int) -> tuple[int, int]:
    """(height, width) of an image as a person sees it: EXIF orientations 5-8 turn it a
    quarter, so its stored sides swap."""
    return (width, height) if orientation >= 5 else (height, width)


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

