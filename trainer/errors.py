"""Errors the trainer reports as one line ("trainer: error: ...", exit 2), never a traceback."""
from pipeline.dataset.manifest import DatasetNotFound
from pipeline.dataset.reader import ShardChecksumError
from pipeline.dataset.storage import StorageError


class UsageError(Exception):
    """The dataset or flags cannot be trained on as given; the message says why."""


class Diverged(Exception):
    """Training diverged (a loss became NaN or Inf, or grew past --divergence-factor); the
    message is the diagnosis. Exit code DIVERGED, and no model is exported. `everywhere`: every
    rank took the same decision (epoch-end losses are averaged over ranks), so only rank 0 says it."""

    def __init__(self, message: str, rank: int = 0, everywhere: bool = False):
        super().__init__(message)
        self.rank, self.everywhere = rank, everywhere


class NonFiniteLoss(Diverged):
    """A batch's loss became NaN or Inf on one rank."""


USAGE, DIVERGED = 2, 3       # exit codes of python -m trainer


def __getattr__(name: str):
    """USER_ERRORS: what is the user's to fix (a bad flag, dataset, bucket or shard), printed as
    one line with exit USAGE by trainer/__main__.py and agreed over ranks before training by
    trainer/runtime/agree.py. Made on first use (PEP 562): ImageSizeError is defined in
    pipeline/dataset/sizing.py, which imports TensorFlow, and flags-only code imports this module."""
    if name != "USER_ERRORS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pipeline.dataset.sizing import ImageSizeError
    return (UsageError, DatasetNotFound, StorageError, ShardChecksumError, ImageSizeError)
