"""python -m trainer --dataset URL --checkpoint-dir URL [options]   (one process per rank)"""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from trainer.flags import XLA_ENV, parser

    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.xla and "--tf_xla_auto_jit" not in os.environ.get("TF_XLA_FLAGS", ""):   # before TensorFlow
        os.environ["TF_XLA_FLAGS"] = f"{os.environ.get('TF_XLA_FLAGS', '')} {XLA_ENV['TF_XLA_FLAGS']}".strip()

    from trainer.config import TrainConfig
    from trainer.errors import DIVERGED, USER_ERRORS, Diverged, OneLine, exit_code
    from trainer.runtime.agree import ReportedByRankZero
    from trainer.train import train

    try:
        train(TrainConfig.from_args(args))
    except ReportedByRankZero as e:      # rank 0 prints the one line for every rank
        return e.code
    except Diverged as e:       # exit 3, so a scheduler can tell "diverged" from "bad input"
        if e.rank == 0 or not e.everywhere:     # a decision every rank took: one line, rank 0's
            print(f"trainer: error: {e}", file=sys.stderr, flush=True)
        return DIVERGED
    except OneLine as e:                 # agreed over ranks before training
        print(f"trainer: error: {e}", file=sys.stderr, flush=True)
        return e.code
    except USER_ERRORS as e:
        print(f"trainer: error: {e}", file=sys.stderr, flush=True)
        return exit_code(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
