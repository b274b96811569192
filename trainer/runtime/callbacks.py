"""Keras callbacks: the training position, progress lines, checkpoints, uploads of logs."""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import tensorflow as tf

from pipeline.dataset.progress_line import LiveLine, Meter
from pipeline.dataset.storage import join
from trainer.keras import keras


class Position(keras.callbacks.Callback):
    """Where training is: `epoch` (0-based) and `batch`, the batches done in it. Keras numbers
    batches from 0 in every fit() call, but a run resumed mid-epoch starts its first epoch at
    `start`'s batch. Put it first among the callbacks: the others read it."""

    def __init__(self, steps: int, start: tuple[int, int] = (0, 0)):
        super().__init__()
        self.steps = steps
        self.epoch, self.batch = start

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps + self.batch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            self.epoch, self.batch = epoch, 0

    def on_train_batch_end(self, batch, logs=None):
        self.batch += 1


SAMPLES_PER_EPOCH = 25
TERMINAL_EVERY = 1.0       # seconds between updates of the progress line on a terminal


class ProgressLogger(keras.callbacks.Callback):
    """The epoch's progress line (pipeline/dataset/progress_line.py): step of steps, images/s
    over the last 30 s, percentage, time left in the epoch, loss, accuracy, learning rate; every
    `every` seconds in a log or under horovodrun (a pipe), in place every second on a terminal,
    where the run's other lines (checkpoints) are written above it. Then one line per epoch."""

    def __init__(self, epochs: int, position: Position, images_per_step: int, every: float, history: list,
                 samples: list | None = None):
        super().__init__()
        self.epochs, self.position, self.images_per_step, self.every = epochs, position, images_per_step, every
        self.steps = position.steps
        self.history = history
        # About SAMPLES_PER_EPOCH (epoch, loss, lr) points per epoch for the report's curves:
        # the warm-up and the decay's shape show, and the report stays small on long runs.
        self.samples = samples if samples is not None else []
        self.sample_every = max(1, self.steps // SAMPLES_PER_EPOCH)

    def on_train_begin(self, logs=None):
        self.out = sys.stdout if isinstance(sys.stdout, LiveLine) else LiveLine(sys.stdout)
        self.interval = TERMINAL_EVERY if self.out.tty else self.every
        if self.out.tty:
            sys.stdout = self.out        # print() from here on writes above the progress line

    def on_train_end(self, logs=None):
        if sys.stdout is self.out:
            self.out.end()
            sys.stdout = self.out.stream

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_start = epoch, time.monotonic()
        self.last_print, self.first_step = self.epoch_start, self.position.batch
        self.meter = Meter(self.steps, window=max(30.0, 3 * self.interval), start=self.first_step)

    def on_train_batch_end(self, batch, logs=None):
        done = self.position.batch
        if done % self.sample_every == 0 or done == self.steps:
            self.samples.append({"epoch": round(self.epoch + done / self.steps, 4),
                                 "loss": float(logs["loss"]), "lr": self._lr()})
        now = time.monotonic()
        if now - self.last_print >= self.interval:
            self.meter.update(done)
            shown = self.meter.progress(f"epoch {self.epoch + 1}/{self.epochs} step", "", "images",
                                        f"loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} lr {self._lr():.4f}")
            self.out.progress(dataclasses.replace(shown, rate=shown.rate * self.images_per_step).line())
            self.last_print = now

    def on_epoch_end(self, epoch, logs=None):
        self.out.clear()                 # the epoch's line below says how it ended
        seconds = time.monotonic() - self.epoch_start
        images = (self.steps - self.first_step) * self.images_per_step
        entry = {"epoch": epoch + 1, "seconds": round(seconds, 2), "lr": self._lr(),
                 "images_per_second": round(images / seconds, 1),
                 **{k: float(v) for k, v in (logs or {}).items()}}
        self.history.append(entry)
        shown = " ".join(f"{k} {entry[k]:.4f}" for k in
                         ("loss", "accuracy", "val_loss", "val_accuracy") if k in entry)
        print(f"epoch {epoch + 1}/{self.epochs} done in {seconds:.0f} s: {shown} "
              f"({entry['images_per_second']:.0f} img/s)", flush=True)

    def _lr(self) -> float:
        opt = self.model.optimizer
        lr = opt.learning_rate
        return float(lr(opt.iterations) if callable(lr) else keras.backend.get_value(lr))


class AverageNonTrainable(keras.callbacks.Callback):
    """Average batch-norm moving statistics over ranks at each epoch end, and every
    `every_steps` steps when mid-epoch checkpoints are on.

    Gradients are averaged every step, so trainable weights agree; moving means/variances are
    computed from each rank's own batches and would drift apart. Averaging them before each
    checkpoint makes every rank hold the model that is saved, so a resumed run and an
    uninterrupted one go on from the same state (runs on every rank: it is a collective)."""

    def __init__(self, allreduce, position: Position | None = None, every_steps: int = 0):
        super().__init__()
        self.allreduce, self.position, self.every_steps = allreduce, position, every_steps

    def on_train_batch_end(self, batch, logs=None):
        at = self.position
        if self.every_steps and at.global_step % self.every_steps == 0 and at.batch < at.steps:
            self.average()

    def on_epoch_end(self, epoch, logs=None):
        self.average()

    def average(self) -> None:
        for var in self.model.non_trainable_variables:
            if var.dtype.is_floating:
                var.assign(self.allreduce(var, name=f"avg_{var.name}"))


class Checkpointing(keras.callbacks.Callback):
    """Rank 0 commits a checkpoint every `every_steps` global steps (0: never mid-epoch) and at
    the end of every epoch; each is uploaded while training goes on. The marker records the
    position, (epoch, batch) with batch < steps, from which a resumed run goes on."""

    def __init__(self, store, checkpoint: tf.train.Checkpoint, position: Position, every_steps: int,
                 meta: dict, state=None):
        super().__init__()
        self.store, self.checkpoint, self.position = store, checkpoint, position
        self.every_steps, self.meta = every_steps, meta
        self.state = state or dict       # () -> what the marker says of this moment (loss scale)

    def on_train_batch_end(self, batch, logs=None):
        at = self.position
        if self.every_steps and at.global_step % self.every_steps == 0 and at.batch < at.steps:
            self.save(at.epoch, at.batch)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1, 0, {k: float(v) for k, v in (logs or {}).items()})

    def on_train_end(self, logs=None):
        self.store.wait()

    def save(self, epoch: int, batch: int, metrics: dict | None = None) -> None:
        step = epoch * self.position.steps + batch
        self.store.save_async(self.checkpoint, step, {
            **self.meta, **self.state(), "epoch": epoch, "batch": batch, "steps_per_epoch": self.position.steps,
            **({"metrics": metrics} if metrics is not None else {})}, done=self._committed)

    @staticmethod
    def _committed(url: str, seconds: float) -> None:
        print(f"checkpoint {url} committed ({seconds:.1f} s)", flush=True)


class CommitState(keras.callbacks.Callback):
    """Elastic mode, every rank: commit the in-memory state (weights, optimizer, position) every
    `every_steps` steps and at each epoch end. A commit is also where a process learns that
    hosts were added or removed (Horovod raises there and re-forms the ring)."""

    def __init__(self, state, position: Position, every_steps: int):
        super().__init__()
        self.state, self.position, self.every_steps = state, position, every_steps

    def on_train_batch_end(self, batch, logs=None):
        at = self.position
        if at.global_step % self.every_steps == 0 and at.batch < at.steps:
            self.commit(at.epoch, at.batch)

    def on_epoch_end(self, epoch, logs=None):
        self.commit(epoch + 1, 0)

    def commit(self, epoch: int, batch: int) -> None:
        self.state.epoch, self.state.batch = epoch, batch
        self.state.commit()


class UploadDirectory(keras.callbacks.Callback):
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
