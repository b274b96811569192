"""Errors the trainer reports as one line ("trainer: error: ...", exit 2), never a traceback."""


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
