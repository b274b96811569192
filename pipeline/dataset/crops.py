"""How stored images of any size become a model's input of one size (the trainer's --image-size).

Datasets whose images share one size (Fashion-MNIST, CIFAR) keep the pad-and-crop path
(load.py). Photos keep their own sizes in the dataset (ingestion stores the original
JPEG bytes), so here, as in the ImageNet references (Inception, ResNet, NVIDIA's
DeepLearningExamples):

- training: a random-resized crop, a box of 8-100 % of the image's area with an aspect ratio
  in 3/4-4/3, resized to the target size; a JPEG is decoded inside the box only
  (tf.image.decode_and_crop_jpeg), which is what makes large photos cheap. The box is drawn by
  (seed, epoch, index in epoch), like every random number of the input, so a resumed run crops
  exactly as the interrupted run would have.
- evaluation, precise batch norm and the serving signature: the central box of 87.5 % of the
  shorter side (with the target's aspect ratio), resized to the target size. One function,
  `center_crop`, in all of them: served predictions equal evaluated ones.

Both turn the pixels upright by the record's EXIF orientation (headers.upright: the training
crop's box is drawn on the stored image, whose area and aspect ranges are the same turned), and
both refuse, before decoding, an image whose header declares more than `max_pixels`.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from pipeline.dataset import headers
from pipeline.dataset.image_sizes import MAX_PIXELS, ImageSizeError
from pipeline.dataset.manifest import Manifest

__all__ = ["CENTER_FRACTION", "MIN_OBJECT_COVERED", "ImageSizeError", "ResizeCrop", "choose"]

CENTER_FRACTION = 0.875        # of the shorter side: the evaluation crop of the ImageNet references
MIN_OBJECT_COVERED = 0.1       # the box keeps at least this much of the image (TF's ResNet reference)


@dataclasses.dataclass(frozen=True)
class ResizeCrop:
    height: int
    width: int
    channels: int
    area: tuple[float, float] = (0.08, 1.0)
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    # The dataset's limit (the manifest's max_pixels); not part of what the crop is.
    max_pixels: int = dataclasses.field(default=MAX_PIXELS, compare=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def describe(self, augment: bool, why: str = "") -> str:
        """The start line for photos: which crops training takes, and `why` (the --augment decision)."""
        because = f": {why}" if why else ""
        training = (f"random-resized crops for training (area {self.area[0]:g}-{self.area[1]:g}, aspect "
                    f"{self.aspect[0]:.2f}-{self.aspect[1]:.2f}{'; ' + why if why else ''})" if augment else
                    f"the central crop for training too (augmentation off{because})")
        return (f"images resized to {self.height}x{self.width}: {training}, the central "
                f"{CENTER_FRACTION:.1%} for evaluation and serving")

    def evaluate(self, encoded: tf.Tensor, orientation=1) -> tf.Tensor:
        """Encoded bytes (any size, PNG/JPEG/GIF/BMP) -> float32 [height, width, channels], 0-255,
        upright by EXIF `orientation`."""
        encoded = headers.checked(encoded, self.max_pixels)
        image = tf.io.decode_image(encoded, channels=self.channels, expand_animations=False)
        return self.center_crop(headers.upright(image, orientation))

    def center_crop(self, image: tf.Tensor) -> tf.Tensor:
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        # The largest box of the target's aspect ratio inside the image, shrunk to CENTER_FRACTION.
        scale = CENTER_FRACTION * tf.minimum(size[0] / self.height, size[1] / self.width)
        box = tf.maximum(tf.cast(tf.round(scale * [self.height, self.width]), tf.int32), 1)
        offset = (tf.shape(image)[:2] - box) // 2
        crop = tf.slice(image, [offset[0], offset[1], 0], [box[0], box[1], -1])
        return self.resized(crop)

    def random_crop(self, encoded, image_format, height, width, key, orientation=1) -> tf.Tensor:
        """A random-resized crop of one record's image -> float32 [height, width, channels], 0-255.
        `key`: the stateless seed (shape [2]) of this image in this epoch; `height`, `width` as
        stored; the crop is turned upright by `orientation` before it is resized."""
        encoded = headers.checked(encoded, self.max_pixels)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.stack([tf.cast(height, tf.int32), tf.cast(width, tf.int32), self.channels]),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=key,
            min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=self.aspect,
            area_range=self.area, max_attempts=10, use_image_if_no_bounding_boxes=True)
        window = tf.stack([begin[0], begin[1], size[0], size[1]])

        def jpeg():                 # only the box is decoded
            return tf.image.decode_and_crop_jpeg(encoded, window, channels=self.channels)

        def other():
            image = tf.io.decode_image(encoded, channels=self.channels, expand_animations=False)
            return tf.slice(image, [begin[0], begin[1], 0], [size[0], size[1], -1])

        crop = tf.cond(tf.equal(image_format, b"jpeg"), jpeg, other)
        return self.resized(headers.upright(crop, orientation))

    def resized(self, image: tf.Tensor) -> tf.Tensor:
        image = tf.image.resize(image, (self.height, self.width), method="bilinear")
        image.set_shape(self.shape)
        return image


def choose(manifest: Manifest, image_size: tuple[int, int] | None) -> ResizeCrop | None:
    """ResizeCrop for photos, None for the fixed-size path (the manifest's one image_shape).
    Photos without --image-size get the median shorter side, at most 224."""
    if manifest.image_shape and not image_size:
        return None
    channels = manifest.channels or 3            # mixed grey and colour: decoded as colour
    if image_size:
        return ResizeCrop(*image_size, channels, max_pixels=manifest.max_pixels)
    sizes = manifest.splits["train"].image_sizes
    if sizes is None:
        raise ImageSizeError(f"images in {manifest.name} differ in size and its manifest predates "
                             "size statistics: pass --image-size S (e.g. 224)")
    side = min(224, sizes.height[1], sizes.width[1])
    return ResizeCrop(side, side, channels, max_pixels=manifest.max_pixels)
