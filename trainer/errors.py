"""Errors the trainer reports as one line ("trainer: error: ...", exit 2), never a traceback."""


class UsageError(Exception):
    """The dataset or flags cannot be trained on as given; the message says why."""


class NonFiniteLoss(Exception):
    """The loss became NaN or Inf; the message is the diagnosis."""
