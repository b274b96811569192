"""How the global batch is cut: images per optimizer update over all ranks, each rank's batch,
and the steps (batches per rank) of an epoch. Every rank takes the same number of steps, or an
allreduce waits forever for the rank that ran out."""
from __future__ import annotations

import dataclasses

from trainer.errors import UsageError


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    global_batch: int          # images per optimizer update, over all ranks
    size: int                  # ranks
    accumulate: int            # batches per rank whose gradients make one update
    updates_per_epoch: int

    @property
    def per_rank(self) -> int:
        """Images in one batch of one rank."""
        return self.global_batch // (self.size * self.accumulate)

    @property
    def steps_per_epoch(self) -> int:
        """Batches each rank takes in an epoch (Keras's steps): whole updates only."""
        return self.updates_per_epoch * self.accumulate


def plan_batches(train_records: int, size: int, batch_size: int, accumulate: int = 1,
                 global_batch_size: int | None = None, resumed_global_batch: int | None = None,
                 elastic: bool = False) -> BatchPlan:
    """One global batch for the whole run: --global-batch-size, else the resumed checkpoint's,
    else --batch-size x ranks x --accumulate; so an elastic run that loses or gains ranks keeps
    its learning-rate schedule and its steps per epoch."""
    if elastic and not global_batch_size:
        raise UsageError("elastic mode needs --global-batch-size: the global batch must not depend "
                         "on how many processes happen to be there when each one starts")
    global_batch = global_batch_size or resumed_global_batch or batch_size * size * accumulate
    plan = BatchPlan(global_batch, size, accumulate, train_records // global_batch)
    if plan.per_rank == 0:
        raise UsageError(f"a global batch of {global_batch} cannot be split over {size} processes x "
                         f"{accumulate} accumulated batches")
    if plan.updates_per_epoch == 0:
        raise UsageError(f"{train_records} training records are fewer than one global "
                         f"batch ({global_batch}); lower --batch-size")
    return plan
