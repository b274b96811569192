"""Is training input-bound? Measure the tf.data pipeline alone and the model step alone.

The input rate is the first pass over this rank's training data (decode included, before the
in-memory cache is warm): the rate the first epoch gets. The step rate is forward + backward +
update on one batch held in memory, without allreduce, with this rank's threads. If the input
delivers fewer images per second than the step consumes, the accelerator waits on input
("GPU starved") for the difference."""
from __future__ import annotations

import time

import tensorflow as tf

from trainer.config import TrainConfig
from trainer.keras import keras
from trainer.model.models import build_model
from trainer.model.objective import make_loss


def input_rate(dataset: tf.data.Dataset, batches: int, batch_size: int, warmup: int = 3) -> float:
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def step_rate(model_name: str, shape, num_classes: int, batch_size: int, steps: int,
              warmup: int = 3) -> float:
    model = build_model(model_name, shape, num_classes)
    model.compile(optimizer=keras.optimizers.legacy.SGD(0.01, momentum=0.9),
                  loss=make_loss(num_classes))
    images = tf.random.uniform((batch_size, *shape))
    labels = tf.random.uniform((batch_size,), 0, num_classes, tf.int64)
    batch = tf.data.Dataset.from_tensors((images, labels)).repeat()   # no input cost at all
    model.fit(batch, steps_per_epoch=warmup, verbose=0)
    started = time.perf_counter()
    model.fit(batch, steps_per_epoch=steps, verbose=0)
    return steps * batch_size / (time.perf_counter() - started)


def measure(config: TrainConfig, train_ds: tf.data.Dataset, shape, num_classes: int, steps: int, say) -> dict:
    """--check-input: every rank measures at once (they share the host as in training); rank 0
    reports."""
    say("input check: measuring the tf.data pipeline alone, then the model step alone ...", flush=True)
    input_ips = input_rate(train_ds, min(steps, 50), config.batch_size)
    step_ips = step_rate(config.model.name, shape, num_classes, config.batch_size, 20)
    result = verdict(input_ips, step_ips)
    say(f"input check (per process): {result['verdict']}", flush=True)
    return result


def verdict(input_ips: float, step_ips: float) -> dict:
    ratio = input_ips / step_ips
    if ratio < 1:
        line = (f"input-bound: the input delivers {input_ips:.0f} images/s, the model step could "
                f"take {step_ips:.0f}; the accelerator would wait on input {1 - ratio:.0%} of the "
                "time (GPU starved). More cores per rank for tf.data, fewer/larger shards per "
                "rank, or pre-resized images help")
    else:
        line = (f"compute-bound: the input delivers {input_ips:.0f} images/s, {ratio:.1f}x what the "
                f"model step takes ({step_ips:.0f} images/s); input is not the bottleneck")
    return {"input_images_per_second": round(input_ips, 1),
            "step_images_per_second": round(step_ips, 1),
            "input_over_step": round(ratio, 3), "input_bound": ratio < 1, "verdict": line}
