"""python -m trainer --dataset URL --checkpoint-dir URL [options]   (one process per rank)

The flags are parsed and checked first, in about a second; TensorFlow and Horovod start only
after (with their start-up banners held back: trainer/banners.py)."""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from trainer.checks import check_flags
    from trainer.config import TrainConfig
    from trainer.errors import DIVERGED, USER_ERRORS, Diverged, OneLine, UsageError, exit_code
    from trainer.flags import XLA_ENV, FlagError, parser

    try:                                  # nothing of TensorFlow imported yet
        args = parser().parse_args(argv)
        config = TrainConfig.from_args(args)
        check_flags(config)
    except (FlagError, UsageError) as e:
        if rank() in ("0", "?"):          # every rank has the same flags: one line is enough
            print(f"trainer: error: {e}{' (see --help)' if isinstance(e, FlagError) else ''}",
                  file=sys.stderr, flush=True)
        return 2
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    if args.xla and "--tf_xla_auto_jit" not in os.environ.get("TF_XLA_FLAGS", ""):   # before TensorFlow
        os.environ["TF_XLA_FLAGS"] = f"{os.environ.get('TF_XLA_FLAGS', '')} {XLA_ENV['TF_XLA_FLAGS']}".strip()

    from trainer.banners import imported_quietly

    with imported_quietly(args.verbose):
        from trainer.runtime.agree import ReportedByRankZero
        from trainer.train import train

    try:
        train(config)
    except ReportedByRankZero as e:      # rank 0 prints the one line for every rank
        return e.code
    except Diverged as e:       # exit 3, so a scheduler can tell "diverged" from "bad input"
        if e.rank == 0 or not e.everywhere:     # a decision every rank took: one line, rank 0's
            print(f"trainer: error: {e}", file=sys.stderr, flush=True)
        return DIVERGED
    except OneLine as e:                 # agreed over ranks before training
        print(f"trainer: error: {e}", file=sys.stderr, flush=True)
        return e.code
    except USER_ERRORS as e:             # during training, found by this rank alone
        print(f"trainer: error: {e}", file=sys.stderr, flush=True)
        leave_first(exit_code(e))
    except Exception as e:
        if PEER_GONE not in str(e):
            raise
        print(f"trainer: error: rank {rank()} stopped: another rank failed first (its line above says why)",
              file=sys.stderr, flush=True)
        return PEER_FAILED
    return 0


def rank() -> str:
    """This process's rank as its launcher set it before starting it ("?" when none did)."""
    return os.environ.get("HOROVOD_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "?"))


# What every other rank's collective raises once one rank has left (Horovod's own words).
PEER_GONE = "Horovod has been shut down"
PEER_FAILED = 1


def leave_first(code: int):
    """Exit at once, before the other ranks notice this one is gone: mpirun reports the exit
    code of the first rank to end, so a scheduler sees this rank's code (75: run it again), not
    a peer's; an orderly exit would first shut Horovod down and let the peers end sooner."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
