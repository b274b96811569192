"""What the model takes, decided once per run: the image shape, how photos are cropped to it,
and how pixels are standardised. Every rank's input pipelines, the backbones' input adapter and
the serving signature use this one value, so they cannot disagree."""
from __future__ import annotations

import dataclasses

from pipeline.dataset import crops
from pipeline.dataset.manifest import Manifest
from trainer.input.datasets import Standardize


@dataclasses.dataclass(frozen=True)
class ModelInput:
    shape: tuple                            # (height, width, channels) the model takes
    sizing: crops.ResizeCrop | None    # photos of many sizes: their crops; None: one size, as it is
    standardize: Standardize                # the training split's pixel statistics
    # What the serving signature repeats of ingestion: turn JPEGs by their EXIF orientation (read
    # from the bytes) when the dataset's records did, and refuse images past the same pixel limit.
    exif_orientation: bool = False
    max_pixels: int = crops.MAX_PIXELS

    @classmethod
    def of(cls, manifest: Manifest, image_size: tuple[int, int] | None) -> "ModelInput":
        """From the manifest and --image-size (raises ImageSizeError when photos need a size)."""
        sizing = crops.choose(manifest, image_size)
        return cls(sizing.shape if sizing else tuple(manifest.image_shape), sizing,
                   Standardize.from_manifest(manifest), manifest.exif_orientation, manifest.max_pixels)
