"""Precise batch-norm statistics (trainer/model/precise_bn.py) on a model small enough to check by hand:
the moving statistics become the plain average of the batches' own (as inference sees them: no
dropout), whatever they were before."""
import numpy as np
import tensorflow as tf

from trainer.keras import keras
from trainer.model import precise_bn


def model_with_two_batch_norms():
    inputs = keras.Input((3,))
    x = keras.layers.Dropout(0.5, name="dropout")(inputs)     # off while statistics are gathered
    x = keras.layers.BatchNormalization(name="trained")(x)
    x = keras.layers.BatchNormalization(name="frozen")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    model.get_layer("frozen").trainable = False
    return model


def test_moving_statistics_become_the_average_of_the_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=5.0 * k, scale=1.0 + k, size=(32, 3)).astype("float32") for k in range(4)]
    dataset = tf.data.Dataset.from_tensor_slices((np.stack(batches), np.zeros((4, 32)))).repeat()
    model = model_with_two_batch_norms()
    frozen_before = [w.copy() for w in model.get_layer("frozen").get_weights()]
    reduced = []

    def allreduce(var, name):          # one process: the average over ranks is its own value
        reduced.append(name)
        return var

    assert precise_bn.recompute(model, dataset, 3, allreduce) == 1
    layer = model.get_layer("trained")
    np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean([b.mean(0) for b in batches[:3]], 0),
                               rtol=1e-5)
    expected = np.mean([b.var(0) for b in batches[:3]], 0)       # Keras's batch variance (2-D input)
    np.testing.assert_allclose(layer.moving_variance.numpy(), expected, rtol=1e-4)
    assert layer.momentum == 0.99 and model.get_layer("dropout").rate == 0.5 and len(reduced) == 2
    for before, after in zip(frozen_before, model.get_layer("frozen").get_weights()):
        np.testing.assert_array_equal(before, after)


def test_zero_batches_or_no_batch_norm_change_nothing():
    model = model_with_two_batch_norms()
    before = [w.copy() for w in model.get_weights()]
    dataset = tf.data.Dataset.from_tensor_slices((np.ones((4, 8, 3), "float32"), np.zeros((4, 8)))).repeat()
    assert precise_bn.recompute(model, dataset, 0, lambda v, name: v) == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert precise_bn.recompute(plain, dataset, 5, lambda v, name: v) == 0
