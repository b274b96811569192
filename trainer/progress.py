"""Progress lines and epoch checkpoints, as Keras callbacks that act on rank 0 only."""
from __future__ import annotations

import os
import time

import tensorflow as tf

from pipeline.storage import join


class ProgressLogger(tf.keras.callbacks.Callback):
    """Every few seconds: epoch, step, loss, accuracy, learning rate, images/s (all ranks)."""

    def __init__(self, epochs: int, steps: int, global_batch: int, every: float, history: list):
        super().__init__()
        self.epochs, self.steps, self.global_batch, self.every = epochs, steps, global_batch, every
        self.history = history

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_start = epoch, time.monotonic()
        self.last_print, self.last_step = self.epoch_start, 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self.last_print >= self.every:
            rate = (batch + 1 - self.last_step) * self.global_batch / (now - self.last_print)
            print(f"epoch {self.epoch + 1}/{self.epochs} step {batch + 1}/{self.steps} "
                  f"loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} lr {self._lr():.4f} "
                  f"{rate:.0f} img/s", flush=True)
            self.last_print, self.last_step = now, batch + 1

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self.epoch_start
        entry = {"epoch": epoch + 1, "seconds": round(seconds, 2), "lr": self._lr(),
                 "images_per_second": round(self.steps * self.global_batch / seconds, 1),
                 **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(entry)
        shown = " ".join(f"{k} {entry[k]:.4f}" for k in
                         ("loss", "accuracy", "val_loss", "val_accuracy") if k in entry)
        print(f"epoch {epoch + 1}/{self.epochs} done in {seconds:.0f} s: {shown} "
              f"({entry['images_per_second']:.0f} img/s)", flush=True)

    def _lr(self) -> float:
        opt = self.model.optimizer
        lr = opt.learning_rate
        return float(lr(opt.iterations) if callable(lr) else tf.keras.backend.get_value(lr))


class AverageNonTrainable(tf.keras.callbacks.Callback):
    """Average batch-norm moving statistics over ranks at each epoch end.

    Gradients are averaged every step, so trainable weights agree; moving means/variances are
    computed from each rank's own batches and would drift apart. Averaging them before the
    checkpoint makes every rank hold the same model (runs on every rank: it is a collective)."""

    def __init__(self, allreduce):
        super().__init__()
        self.allreduce = allreduce

    def on_epoch_end(self, epoch, logs=None):
        for var in self.model.non_trainable_variables:
            if var.dtype.is_floating:
                var.assign(self.allreduce(var, name=f"avg_{var.name}"))


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Rank 0 commits a checkpoint at the end of every epoch (uploaded while training goes on)."""

    def __init__(self, store, checkpoint: tf.train.Checkpoint, epoch_var: tf.Variable, meta: dict):
        super().__init__()
        self.store, self.checkpoint, self.epoch_var, self.meta = store, checkpoint, epoch_var, meta

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_var.assign(epoch + 1)
        self.store.save_async(self.checkpoint, epoch + 1, {**self.meta, "metrics": {
            k: float(v) for k, v in (logs or {}).items()}}, done=self._committed)

    def on_train_end(self, logs=None):
        self.store.wait()

    @staticmethod
    def _committed(url: str, seconds: float) -> None:
        print(f"checkpoint {url} committed ({seconds:.1f} s)", flush=True)


class UploadDirectory(tf.keras.callbacks.Callback):
    """Rank 0 copies a local directory (TensorBoard logs) to storage after every epoch, so the
    logs of a run that dies later are still there. Files that did not change are not re-sent."""

    def __init__(self, storage, local_dir: str, url: str):
        super().__init__()
        self.storage, self.local_dir, self.url = storage, local_dir, url
        self.sent: dict[str, tuple[int, float]] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.upload()

    def upload(self) -> None:
        for root, _, files in os.walk(self.local_dir):
            for name in files:
                path = os.path.join(root, name)
                stat = os.stat(path)
                if self.sent.get(path) != (stat.st_size, stat.st_mtime):
                    rel = os.path.relpath(path, self.local_dir)
                    self.storage.upload(path, join(self.url, *rel.split(os.sep)))
                    self.sent[path] = (stat.st_size, stat.st_mtime)
