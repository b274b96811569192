"""Precise batch-norm statistics ("precise BN": Wu & Johnson, Rethinking "Batch" in BatchNorm,
2021; pycls and detectron2 do the same). Keras keeps an exponential moving average (momentum
0.99): after a few hundred steps it still holds much of the initial statistics (mean 0,
variance 1) and those of early weights, so evaluation and serving use statistics that lag the
final weights. After the last epoch, every trainable batch-norm layer's moving mean and
variance become the plain average over `batches` training batches run with the final weights;
then the ranks' averages are averaged, so every rank holds the same model. Dropout is off
while they are gathered.

Each rank runs the same number of batches (an allreduce average of averages is then the average
over all of them). Frozen batch-norm layers (--freeze) run in inference mode and are left alone."""
from __future__ import annotations

from trainer.keras import keras


def all_layers(model) -> list:
    """Every layer, nested models' included."""
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "layers", []))
    return found


def batch_norm_layers(model) -> list:
    return [layer for layer in all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def recompute(model, batches, count: int, allreduce) -> int:
    """Replace the moving statistics by their average over `count` batches of `batches` (a
    dataset of (images, labels), repeated) and the ranks; returns the number of layers updated.
    `allreduce(variable, name)` averages over ranks; every rank must call this alike."""
    layers = batch_norm_layers(model)
    if not layers or count <= 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    # Dropout off meanwhile (rate 0 is Keras's identity): inference sees no dropout, so the
    # statistics should not either, and no random draw makes them depend on the RNG's state.
    dropouts = [(layer, layer.rate) for layer in all_layers(model) if isinstance(layer, keras.layers.Dropout)]
    try:
        for layer, _ in dropouts:
            layer.rate = 0.0
        for k, (images, _) in enumerate(batches.take(count), 1):
            # moving = moving * (1 - 1/k) + batch / k: after k batches, their plain average.
            # Eager calls read layer.momentum each time (a traced call would bake it in).
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / k
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for layer, rate in dropouts:
            layer.rate = rate
    for layer in layers:
        for var in (layer.moving_mean, layer.moving_variance):
            var.assign(allreduce(var, name=f"precise_bn_{var.name}"))
    return len(layers)
