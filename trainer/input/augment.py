"""Training augmentation. Every random number comes from a stateless op keyed by (seed, epoch,
position), not from a stateful generator, so a resumed run augments exactly as the interrupted
run would have.

Images of one size are augmented a whole batch at a time (one op per batch instead of one
tf.data map call per image: that call, not the arithmetic, is what small images cost); photos
of many sizes are decoded inside their own random-resized crop, one at a time, before batching."""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from pipeline.dataset.crops import ResizeCrop


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random crop from the image padded by 1/8 of its size, horizontal flip, brightness,
    contrast and random erasing."""
    shape: tuple
    seed: int
    flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    erase: float = 0.0

    @property
    def photometric(self) -> bool:
        return bool(self.brightness or self.contrast)

    def keys(self, epoch, position):
        """key(op): the stateless seed of random op `op` (0-15) for this batch (or photo) of
        this epoch; distinct for every (seed, op), so ranks (seed + rank) never share a stream."""
        element = tf.cast(epoch, tf.int64) * 2**32 + tf.cast(position, tf.int64)   # unique in a run
        return lambda op: tf.stack([tf.constant(self.seed * 16 + op, tf.int64), element])

    def on_batch(self, epoch, batch, images):
        """A batch of uint8 images -> uint8, or floats in [0, 1] when brightness/contrast are on."""
        key = self.keys(epoch, batch)
        count = tf.shape(images)[0]
        height, width, _ = self.shape
        pad = max(2, height // 8)
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        corners = tf.random.stateless_uniform((count, 2), key(0), minval=0, maxval=2 * pad + 1, dtype=tf.int32)
        rows = corners[:, :1] + tf.range(height)[tf.newaxis]           # (count, height)
        columns = corners[:, 1:] + tf.range(width)[tf.newaxis]
        cropped = tf.gather(tf.gather(padded, rows, batch_dims=1), columns, axis=2, batch_dims=1)
        if self.flip:
            flipped = tf.random.stateless_uniform((count,), key(1)) < 0.5
            cropped = tf.where(flipped[:, None, None, None], tf.reverse(cropped, [2]), cropped)
        images = self.shift(cropped, key, (count, 1, 1, 1)) if self.photometric else cropped
        return self.erased(images, key) if self.erase else images

    def shift(self, images, key, shape):
        """--brightness/--contrast on [0, 1] floats (ops 2 and 3); `shape` broadcasts one draw
        per image over a batch (count, 1, 1, 1) or a single image ()."""
        images = tf.cast(images, tf.float32) / 255.0 if images.dtype == tf.uint8 else images
        if self.brightness:
            images += tf.random.stateless_uniform(shape, key(2), -self.brightness, self.brightness)
        if self.contrast:
            factor = tf.random.stateless_uniform(shape, key(3), 1 - self.contrast, 1 + self.contrast)
            mean = tf.reduce_mean(images, axis=[-3, -2], keepdims=True)
            images = (images - mean) * factor + mean
        return tf.clip_by_value(images, 0.0, 1.0)

    def erased(self, images, key):
        """--erase (random erasing, Zhong et al. 2017): in each image of a batch, with probability
        `erase`, a rectangle of 2-40 % of its area and aspect ratio 0.3-3.3 (ops 4-9) becomes
        uniform noise. Rectangles are clipped to the image instead of being drawn again."""
        count, height, width = tf.unstack(tf.shape(images)[:3])
        draw = lambda op, low, high: tf.random.stateless_uniform((count,), key(op), low, high)
        area = draw(4, 0.02, 0.4) * tf.cast(height * width, tf.float32)
        aspect = tf.exp(draw(5, math.log(0.3), -math.log(0.3)))
        rows = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, height)
        columns = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, width)
        top = tf.cast(draw(6, 0.0, 1.0) * tf.cast(height - rows + 1, tf.float32), tf.int32)
        left = tf.cast(draw(7, 0.0, 1.0) * tf.cast(width - columns + 1, tf.float32), tf.int32)
        span = lambda start, size, length: tf.logical_and(
            tf.range(length)[tf.newaxis] >= start[:, tf.newaxis],
            tf.range(length)[tf.newaxis] < (start + size)[:, tf.newaxis])
        inside = (span(top, rows, height)[:, :, tf.newaxis] & span(left, columns, width)[:, tf.newaxis]
                  & (draw(8, 0.0, 1.0) < self.erase)[:, tf.newaxis, tf.newaxis])
        if images.dtype == tf.uint8:
            noise = tf.cast(tf.random.stateless_uniform(tf.shape(images), key(9), 0, 256, tf.int32), tf.uint8)
        else:
            noise = tf.random.stateless_uniform(tf.shape(images), key(9), dtype=images.dtype)
        return tf.where(inside[..., tf.newaxis], noise, images)


@dataclasses.dataclass(frozen=True)
class PhotoAugmentation(Augmentation):
    """Photos (pipeline/dataset/crops.py): a random-resized crop instead of the padded crop, then
    the same flip, brightness and contrast, keyed by (seed, epoch, index in epoch). Records arrive
    undecoded, and are turned upright by their EXIF orientation inside the crop."""
    sizing: ResizeCrop | None = None

    def __call__(self, epoch, index, record):
        (encoded, image_format, height, width, *turned), label = record   # + orientation (load.py)
        key = self.keys(epoch, index)
        orientation = turned[0] if turned else 1
        image = self.sizing.random_crop(encoded, image_format, height, width, key(0), orientation) / 255.0
        if self.flip:
            image = tf.image.stateless_random_flip_left_right(image, key(1))
        image = self.shift(image, key, ()) if self.photometric else image
        return (self.erased(image[tf.newaxis], key)[0] if self.erase else image), label
