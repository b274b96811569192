"""One run's training loop, shared by every fit() of the run: the inputs of the current rank,
the callbacks, fit from a position to the last epoch, and the test scores summed over ranks."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import tensorflow as tf
import horovod.tensorflow as hvd_tf
import horovod.tensorflow.keras as hvd

from pipeline.dataset.manifest import Manifest
from pipeline.dataset.shard_cache import ShardCache
from pipeline.dataset.storage import Storage, join
from trainer.config import TrainConfig
from trainer.input.batching import BatchPlan
from trainer.input.model_input import ModelInput
from trainer.input.rank_inputs import RankInputs
from trainer.keras import keras
from trainer.model import heads as heads_lib, precise_bn, precision
from trainer.results import batch_grid, predictions, scores
from trainer.runtime import faults
from trainer.runtime.callbacks import (AverageNonTrainable, Checkpointing, CommitState, Position, ProgressLogger,
                              UploadDirectory)
from trainer.runtime.guards import StopOnNonFiniteLoss
from trainer.runtime.profiling import ProfileSteps
from trainer.state.checkpoints import CheckpointStore


def rank_inputs(config: TrainConfig, manifest: Manifest, heads: list, model_input: ModelInput, threads: int,
                batches: BatchPlan, rank: int, size: int, cache: ShardCache) -> RankInputs:
    return RankInputs(config.inputs, manifest, model_input, threads, batches.steps_per_epoch,
                      batches.per_rank, rank, size, cache, heads_lib.label_outputs(heads))


@dataclasses.dataclass
class Run:
    """What every fit() of this run shares; inputs and callbacks depend on the current rank."""
    config: TrainConfig
    storage: Storage
    manifest: Manifest
    heads: list
    model_input: ModelInput
    threads: int
    batches: BatchPlan
    model: keras.Model
    checkpoint: tf.train.Checkpoint
    store: CheckpointStore
    shards: ShardCache                             # this process's, kept when an elastic world changes
    fault_flag: tf.Variable | None = None          # trainer/runtime/faults.py, tests only
    history: list = dataclasses.field(default_factory=list)        # one entry per epoch
    samples: list = dataclasses.field(default_factory=list)        # (epoch, loss, lr), per step

    @property
    def steps(self) -> int:
        return self.batches.steps_per_epoch

    @property
    def global_batch(self) -> int:
        return self.batches.global_batch

    @property
    def tensorboard_url(self) -> str | None:
        outputs = self.config.outputs
        return join(outputs.checkpoint_dir, "tensorboard") if outputs.tensorboard else None

    def inputs(self, rank: int, size: int) -> RankInputs:
        return rank_inputs(self.config, self.manifest, self.heads, self.model_input, self.threads,
                           self.batches, rank, size, self.shards)

    def callbacks(self, position: Position, inputs: RankInputs) -> list:
        outputs = self.config.outputs
        optimizer = self.model.optimizer
        scale = (lambda: precision.loss_scale(optimizer)) if precision.loss_scale_variables(optimizer) else None
        callbacks = [*self.fault_callbacks(position),
                     # Horovod: the epoch's metrics averaged over ranks, so every rank logs and
                     # decides (guards, checkpoints) on the same numbers.
                     hvd.callbacks.MetricAverageCallback(),
                     # Horovod: batch-norm moving statistics averaged over ranks (allreduce).
                     AverageNonTrainable(lambda v, name: hvd_tf.allreduce(v, op=hvd_tf.Average, name=name),
                                         position, outputs.checkpoint_every),
                     StopOnNonFiniteLoss(position, hvd.rank(), inputs.batch_ids, scale,
                                         self.config.divergence_factor),
                     *heads_lib.callbacks(self.heads, hvd.rank())]
        # Horovod: progress lines, checkpoints and logs on rank 0 only, so that ranks never
        # write over each other's files.
        if hvd.rank() != 0:
            return callbacks
        images_per_step = self.batches.per_rank * hvd.size()       # Horovod: over all ranks
        moment = lambda: {"loss_scale": precision.loss_scale(optimizer)}   # noqa: E731
        callbacks += [ProgressLogger(self.config.epochs, position, images_per_step, outputs.log_every,
                                     self.history, self.samples),
                      Checkpointing(self.store, self.checkpoint, position, outputs.checkpoint_every,
                                    self.checkpoint_meta(), moment)]
        if outputs.profile:
            profile = self.config.local_dir(hvd.rank(), "profile")
            uploader = UploadDirectory(self.storage, profile, join(outputs.checkpoint_dir, "profile"))
            callbacks.append(ProfileSteps(profile, hvd_tf, done=uploader.upload))   # Horovod: + timeline
        if self.tensorboard_url:
            logs = self.config.local_dir(hvd.rank(), "tensorboard")
            callbacks += [keras.callbacks.TensorBoard(logs, update_freq="epoch", profile_batch=0),
                          UploadDirectory(self.storage, logs, self.tensorboard_url)]
        return callbacks

    def fault_callbacks(self, position: Position) -> list:
        plan = faults.planned()
        return [faults.InfGradientAt(self.fault_flag, position, hvd.rank(), plan)] if plan else []

    def checkpoint_meta(self) -> dict:
        """What a checkpoint's marker says about the model (--init-from rebuilds it from this)."""
        meta = {"dataset": self.config.inputs.dataset, "dataset_version": self.manifest.content_id,
                "world_size": hvd.size(),
                "model": self.config.model.name, "global_batch": self.global_batch,
                "accumulate": self.batches.accumulate, "precision": self.config.devices.precision,
                "image_shape": list(self.model_input.shape), "classes": self.manifest.classes}
        if not heads_lib.single(self.heads):
            meta["heads"] = {h.attribute: h.classes for h in self.heads}
        return meta

    def fit_options(self, inputs: RankInputs) -> dict:
        if not inputs.validation_steps:
            return {}
        return {"validation_data": inputs.validation(), "validation_steps": inputs.validation_steps}


def fit_and_score(run: Run, start: tuple[int, int], extra_callbacks=None) -> dict:
    """Train from `start` = (epoch, batch) to the last epoch, then score the test split: every
    rank scores its own files and the sums are added over ranks ({head: (confusion, histogram)})."""
    rank, size = hvd.rank(), hvd.size()     # Horovod: elastic: the world as it is now
    inputs = run.inputs(rank, size)
    if rank == 0 and start == (0, 0):        # Horovod: one picture of what the model is fed
        batch_grid.write_batches(run.storage, inputs, run.manifest.classes, run.model_input.standardize,
                                 run.config.outputs.report_url(), run.config.local_dir(0, "batches"))
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
    precise_statistics(run, inputs)
    # Horovod: each rank scores its own test files and uploads its rows of predictions.parquet;
    # the counts are added over ranks (allreduce), after which every part is there for rank 0.
    report_url = run.config.outputs.report_url()
    part = predictions.PartWriter(run.storage, run.config.local_dir(rank, "predictions"),
                                  predictions.part_url(report_url, rank, size))
    return scores.score(run.model, inputs.test(with_ids=True), run.heads, lambda v, name: hvd_tf.allreduce(
        v, op=hvd_tf.Sum, name=name).numpy(), part)


def precise_statistics(run: Run, inputs: RankInputs) -> None:
    """Batch-norm statistics of the final weights before scoring and export (trainer/model/precise_bn.py)."""
    count = min(run.config.precise_bn, run.steps)      # at most one pass over this rank's share
    # Horovod: each rank's averages averaged over ranks (allreduce), so every rank holds one model.
    updated = precise_bn.recompute(run.model, inputs.statistics(), count, lambda v, name: hvd_tf.allreduce(
        v, op=hvd_tf.Average, name=name))
    if updated and hvd.rank() == 0:
        print(f"batch-norm statistics of {updated} layers recomputed with the final weights over "
              f"{count} batches per rank (--precise-bn)", flush=True)


def fit_elastic(run: Run, start: tuple[int, int]) -> dict:
    """Horovod elastic: processes may leave or join. The state (weights, optimizer, position) is
    committed in memory every --commit-every steps; when a process dies, the others roll back
    to the last commit, re-form the ring, re-partition the input and go on."""
    # Horovod: the state committed in memory, and restored on every rank after the world changes.
    state = hvd.elastic.KerasState(run.model, epoch=start[0], batch=start[1])
    scale = precision.loss_scale_variables(run.model.optimizer)

    @hvd.elastic.run      # Horovod: run again from the last commit when processes leave or join
    def train_elastic(state):
        print(f"rank {hvd.rank()} of {hvd.size()}: training from epoch {state.epoch + 1} "
              f"batch {state.batch}", flush=True)
        if scale:       # Horovod: KerasState syncs the optimizer's variables, not the loss scale's
            hvd_tf.broadcast_variables(scale, root_rank=0)
        return fit_and_score(run, (state.epoch, state.batch), lambda position: [
            CommitState(state, position, run.config.outputs.commit_every)])

    return train_elastic(state)


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]
