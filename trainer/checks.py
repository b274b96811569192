"""The flags checked before TensorFlow and Horovod start (python -m trainer does it first, in a
second, instead of after a minute of start-up): what needs neither TensorFlow, nor the dataset,
nor the other ranks: model names, URL schemes, flags that need each other. train.py checks them
again on every rank (for callers of train() that skip __main__), agreed over ranks."""
from __future__ import annotations

from pipeline.dataset.storage import unsupported
from trainer.config import TrainConfig
from trainer.errors import UsageError
from trainer.model.names import MODEL_NAMES


def check_flags(config: TrainConfig) -> None:
    """UsageError (one line naming the flag) for the first value that cannot work."""
    m, o, d, out = config.model, config.optimizer, config.devices, config.outputs
    if m.name not in MODEL_NAMES:
        raise UsageError(f"unknown model {m.name!r} (choose from: {', '.join(MODEL_NAMES)})")
    for flag, url in (("--dataset", config.inputs.dataset), ("--checkpoint-dir", out.checkpoint_dir),
                      ("--model-dir", out.model_dir), ("--report", out.report), ("--init-from", m.init_from)):
        if url and unsupported(url):
            raise UsageError(f"{flag} {unsupported(url)}")
    if m.unfreeze_top and not m.freeze:
        raise UsageError("--unfreeze-top needs --freeze (e.g. --freeze all-but-head)")
    if m.restore and not m.init_from:
        raise UsageError("--restore needs --init-from")
    if o.decay_epochs and o.decay != "step":
        raise UsageError("--decay-epochs needs --decay step")
    if o.decay_epochs and max(o.decay_epochs) >= config.epochs:
        raise UsageError(f"--decay-epochs {o.decay_epochs} must lie before --epochs {config.epochs}")
    for flag, every in (("--checkpoint-every", out.checkpoint_every), ("--commit-every", out.commit_every)):
        if every % d.accumulate:
            raise UsageError(f"{flag} {every} must be a multiple of --accumulate {d.accumulate}: a state "
                             "saved between the batches of one update would lose their gradients")
