"""Images of one size that fit in memory are decoded once, before the first step, and every
training batch is then gathered from memory by index, a whole batch per tf.data call: small
images cost tf.data's per-element overhead far more than their decoding (measured in
benchmarks/trainer_input.py). The order is EpochPlan's: fixed by (seed, epoch), cut or cycled
to steps x batch_size, so exact resume is unchanged."""
from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from pipeline.dataset.load import decoded_batches

AUTOTUNE = tf.data.AUTOTUNE


class DecodedImages:
    """One rank's training images (uint8, N x H x W x C) and labels (or {output: labels}), in
    the order of load.record_ids(files, shard_records): the order batch ids are named in."""

    def __init__(self, files, shape, shard_records=None, outputs=None):
        started = time.perf_counter()
        images, labels = [], []
        for image_batch, label_batch in decoded_batches(files, tuple(shape), shard_records, outputs):
            images.append(image_batch.numpy())
            labels.append(tf.nest.map_structure(lambda t: t.numpy(), label_batch))
        self.count = sum(len(batch) for batch in images)
        if not self.count:
            raise ValueError("no training records to decode")
        self.seconds = time.perf_counter() - started
        # Variables, pinned to the host: a captured constant would be copied each time tf.data
        # serialises its graph (2.4 s for 2 GiB, measured), and without the pin a GPU node
        # would place the whole dataset in GPU memory.
        stacked = np.concatenate(images)
        del images                      # at most two copies of the images at any time
        with tf.device("/CPU:0"):
            self.images = tf.Variable(stacked, trainable=False, name="decoded_images")
            self.labels = tf.nest.map_structure(
                lambda *parts: tf.Variable(np.concatenate(parts), trainable=False, name="decoded_labels"),
                *labels)

    @property
    def rate(self) -> float:
        return self.count / max(self.seconds, 1e-9)

    def batches(self, plan, start: tuple[int, int], augmentation, to_float) -> tf.data.Dataset:
        """Endless (images, labels) batches from (epoch, batch) = `start` on."""
        def gather(epoch, batch, indices):
            images = tf.gather(self.images, indices)
            labels = tf.nest.map_structure(lambda held: tf.gather(held, indices), self.labels)
            if augmentation:
                images = augmentation.on_batch(epoch, batch, images)
            return to_float(images, labels)

        return plan.index_batches(self.count, start).map(gather, num_parallel_calls=AUTOTUNE)
