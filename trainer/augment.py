"""Training augmentation. Every random number comes from a stateless op keyed by (seed, epoch,
position), not from a stateful generator, so a resumed run augments exactly as the interrupted
run would have.

Images of one size are augmented a whole batch at a time (one op per batch instead of one
tf.data map call per image: that call, not the arithmetic, is what small images cost); photos
of many sizes are decoded inside their own random-resized crop, one at a time, before batching."""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from pipeline.dataset.sizing import ResizeCrop


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random crop from the image padded by 1/8 of its size, horizontal flip, brightness and
    contrast."""
    shape: tuple
    seed: int
    flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0

    @property
    def photometric(self) -> bool:
        return bool(self.brightness or self.contrast)

    def keys(self, epoch, position):
        """key(op): the stateless seed of random op `op` for this batch (or photo) of this epoch."""
        element = tf.cast(epoch, tf.int64) * 2**32 + tf.cast(position, tf.int64)   # unique in a run
        return lambda op: tf.stack([tf.constant(self.seed * 4 + op, tf.int64), element])

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
        return self.shift(cropped, key, (count, 1, 1, 1)) if self.photometric else cropped

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


@dataclasses.dataclass(frozen=True)
class PhotoAugmentation(Augmentation):
    """Photos (pipeline/dataset/sizing.py): a random-resized crop instead of the padded crop, then
    the same flip, brightness and contrast, keyed by (seed, epoch, index in epoch). Records arrive
    undecoded."""
    sizing: ResizeCrop | None = None

    def __call__(self, epoch, index, record):
        (encoded, image_format, height, width), label = record
        key = self.keys(epoch, index)
        image = self.sizing.random_crop(encoded, image_format, height, width, key(0)) / 255.0
        if self.flip:
            image = tf.image.stateless_random_flip_left_right(image, key(1))
        return (self.shift(image, key, ()) if self.photometric else image), label
