"""--profile: a tf.profiler trace and Horovod's timeline for a few steps of the first epoch."""
from __future__ import annotations

import os

import tensorflow as tf

from trainer.keras import keras


class ProfileSteps(keras.callbacks.Callback):
    """Rank 0 records steps [first, first + count) of the first epoch it trains: a TensorFlow
    profiler trace (TensorBoard's Profile tab) and Horovod's timeline (chrome://tracing), both
    under local_dir; `done` uploads them. The first steps are skipped: they trace the graph."""

    def __init__(self, local_dir: str, hvd_module, first: int = 5, count: int = 5, done=None):
        super().__init__()
        self.local_dir, self.hvd, self.first, self.last = local_dir, hvd_module, first, first + count
        self.done, self.active, self.finished = done, False, False
        self.timeline = os.path.join(local_dir, "horovod_timeline.json")

    def on_train_batch_begin(self, batch, logs=None):
        if not self.finished and not self.active and batch == self.first:
            os.makedirs(self.local_dir, exist_ok=True)
            tf.profiler.experimental.start(self.local_dir)
            # Horovod: its timeline of the same steps (negotiation, fusion, allreduce); possible
            # mid-run because train.py sets HOROVOD_TIMELINE=DYNAMIC before hvd.init().
            self.hvd.start_timeline(self.timeline, mark_cycles=True)
            self.active = True

    def on_train_batch_end(self, batch, logs=None):
        if self.active and batch + 1 >= self.last:
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        if self.active:                     # an epoch shorter than the profiled range
            self._stop()

    def _stop(self):
        tf.profiler.experimental.stop()
        self.hvd.stop_timeline()        # Horovod: the timeline file is complete once stopped
        self.active, self.finished = False, True
        print(f"profile of steps {self.first + 1}-{self.last}: {self.local_dir} "
              "(TensorBoard --logdir, Profile tab; horovod_timeline.json in chrome://tracing)", flush=True)
        if self.done:
            self.done()
