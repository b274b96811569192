"""Errors the trainer reports as one line ("trainer: error: ..."), never a traceback, and the
exit codes that tell a scheduler what happened (README "Exit codes")."""
from pipeline.dataset.image_sizes import ImageSizeError
from pipeline.dataset.lease import LeaseHeld, LeaseLost
from pipeline.dataset.local_files import FolderInUse
from pipeline.dataset.local_paths import UnsafeName
from pipeline.dataset.manifest import DatasetNotFound
from pipeline.dataset.reader import ShardChecksumError
from pipeline.dataset.shard_cache import CacheTooSmall
from pipeline.dataset.storage import StorageError, TransientStorageError


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


# Exit codes of python -m trainer: 2 the flags, dataset or store need fixing; 3 training
# diverged; 75 (EX_TEMPFAIL) the object store kept failing after every retry: run it again.
USAGE, DIVERGED, TRANSIENT = 2, 3, 75


# What is the user's to fix (a bad flag, dataset, bucket or shard; a folder another run holds; a
# remote name that would leave its local folder): printed as one line by trainer/__main__.py and
# agreed over ranks before training by trainer/runtime/agree.py.
USER_ERRORS = (UsageError, DatasetNotFound, StorageError, ShardChecksumError, ImageSizeError,
               LeaseHeld, LeaseLost, FolderInUse, UnsafeName, CacheTooSmall)


class OneLine(Exception):
    """An error every rank agreed on before training: rank 0 prints `message`, all exit `code`."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def exit_code(error: BaseException) -> int:
    """TRANSIENT for a store that kept failing in a way that may pass (a scheduler retries the
    run; it resumes from its last checkpoint), USAGE for everything the user must fix."""
    return TRANSIENT if isinstance(error, TransientStorageError) else USAGE
