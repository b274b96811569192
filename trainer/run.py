"""One run's training loop, shared by every fit() of the run: the inputs of the current rank,
the callbacks, fit from a position to the last epoch, and the test scores summed over ranks."""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow as tf
import horovod.tensorflow as hvd_tf
import horovod.tensorflow.keras as hvd

from pipeline.dataset.manifest import Manifest
from pipeline.dataset.storage import Storage, join
from trainer import heads as heads_lib
from trainer.checkpoints import CheckpointStore
from trainer.config import TrainConfig
from trainer.guards import StopOnNonFiniteLoss
from trainer.inputs import RankInputs
from trainer.profiling import ProfileSteps
from trainer.progress import (AverageNonTrainable, Checkpointing, CommitState, Position, ProgressLogger,
                              UploadDirectory)


def rank_inputs(storage: Storage, config: TrainConfig, manifest: Manifest, heads: list, shape,
                threads: int, steps: int, global_batch: int, rank: int, size: int) -> RankInputs:
    return RankInputs(storage, config.inputs, manifest, shape, threads, steps, global_batch, rank,
                      size, heads_lib.label_outputs(heads))


@dataclasses.dataclass
class Run:
    """What every fit() of this run shares; inputs and callbacks depend on the current rank."""
    config: TrainConfig
    storage: Storage
    manifest: Manifest
    heads: list
    shape: tuple
    threads: int
    steps: int
    global_batch: int
    model: tf.keras.Model
    checkpoint: tf.train.Checkpoint
    store: CheckpointStore
    history: list = dataclasses.field(default_factory=list)

    @property
    def tensorboard_url(self) -> str | None:
        outputs = self.config.outputs
        return join(outputs.checkpoint_dir, "tensorboard") if outputs.tensorboard else None

    def inputs(self, rank: int, size: int) -> RankInputs:
        return rank_inputs(self.storage, self.config, self.manifest, self.heads, self.shape,
                           self.threads, self.steps, self.global_batch, rank, size)

    def callbacks(self, position: Position, inputs: RankInputs) -> list:
        outputs = self.config.outputs
        callbacks = [hvd.callbacks.MetricAverageCallback(),
                     AverageNonTrainable(lambda v, name: hvd_tf.allreduce(v, op=hvd_tf.Average, name=name),
                                         position, outputs.checkpoint_every),
                     StopOnNonFiniteLoss(position, hvd.rank(), inputs.batch_ids),
                     *heads_lib.callbacks(self.heads, hvd.rank())]
        if hvd.rank() != 0:
            return callbacks
        callbacks += [ProgressLogger(self.config.epochs, position, self.global_batch, outputs.log_every,
                                     self.history),
                      Checkpointing(self.store, self.checkpoint, position, outputs.checkpoint_every,
                                    self.checkpoint_meta())]
        if outputs.profile:
            profile = self.config.local_dir("profile", f"{os.getpid()}")
            uploader = UploadDirectory(self.storage, profile, join(outputs.checkpoint_dir, "profile"))
            callbacks.append(ProfileSteps(profile, hvd_tf, done=uploader.upload))
        if self.tensorboard_url:
            logs = self.config.local_dir("tensorboard", f"{os.getpid()}")
            callbacks += [tf.keras.callbacks.TensorBoard(logs, update_freq="epoch", profile_batch=0),
                          UploadDirectory(self.storage, logs, self.tensorboard_url)]
        return callbacks

    def checkpoint_meta(self) -> dict:
        """What a checkpoint's marker says about the model (--init-from rebuilds it from this)."""
        meta = {"dataset": self.config.inputs.dataset, "world_size": hvd.size(),
                "model": self.config.model.name, "global_batch": self.global_batch,
                "image_shape": list(self.shape), "classes": self.manifest.classes}
        if not heads_lib.single(self.heads):
            meta["heads"] = {h.attribute: h.classes for h in self.heads}
        return meta

    def fit_options(self, inputs: RankInputs) -> dict:
        if inputs.validation_count < self.global_batch:
            return {}
        return {"validation_data": inputs.validation(),
                "validation_steps": inputs.validation_count // self.global_batch}


def fit_and_score(run: Run, start: tuple[int, int], extra_callbacks=None) -> dict:
    """Train from `start` = (epoch, batch) to the last epoch, then score the test split: every
    rank scores its own files and the sums are added over ranks ({head: (confusion, histogram)})."""
    rank, size = hvd.rank(), hvd.size()
    inputs = run.inputs(rank, size)
    position = Position(run.steps, start)
    # Extra callbacks (elastic commits) last: they then commit what the others left, e.g. the
    # batch-norm statistics averaged at the end of an epoch.
    callbacks = [position, *run.callbacks(position, inputs),
                 *(extra_callbacks(position) if extra_callbacks else [])]
    epoch, batch = start
    if batch:        # finish the interrupted epoch first: Keras runs whole epochs only
        run.model.fit(inputs.training(start), epochs=epoch + 1, initial_epoch=epoch,
                      steps_per_epoch=run.steps - batch, callbacks=callbacks, verbose=0,
                      **run.fit_options(inputs))
        epoch, batch = epoch + 1, 0
    if epoch < run.config.epochs:
        run.model.fit(inputs.training((epoch, 0)), epochs=run.config.epochs, initial_epoch=epoch,
                      steps_per_epoch=run.steps, callbacks=callbacks, verbose=0,
                      **run.fit_options(inputs))
    return heads_lib.score(run.model, inputs.test(), run.heads, lambda v, name: hvd_tf.allreduce(
        v, op=hvd_tf.Sum, name=name).numpy())


def fit_elastic(run: Run, start: tuple[int, int]) -> dict:
    """Horovod elastic: processes may leave or join. The state (weights, optimizer, position) is
    committed in memory every --commit-every steps; when a process dies, the others roll back
    to the last commit, re-form the ring, re-partition the input and go on."""
    state = hvd.elastic.KerasState(run.model, epoch=start[0], batch=start[1])

    @hvd.elastic.run
    def train_elastic(state):
        print(f"rank {hvd.rank()} of {hvd.size()}: training from epoch {state.epoch + 1} "
              f"batch {state.batch}", flush=True)
        return fit_and_score(run, (state.epoch, state.batch), lambda position: [
            CommitState(state, position, run.config.outputs.commit_every)])

    return train_elastic(state)


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]
