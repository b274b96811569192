"""The one place the trainer gets Keras from: Keras 2, which Horovod's Keras API needs.

TensorFlow 2.16 and later ship Keras 3 as `tf.keras`, unless TF_USE_LEGACY_KERAS=1 is set before
TensorFlow is imported; then `tf.keras` is the tf_keras package (Keras 2). trainer/__init__.py
sets it, so `python -m trainer` and `import trainer...` get Keras 2; a process that imported
TensorFlow before setting it gets a clear error here instead of a failure deep in Horovod."""
from __future__ import annotations

import importlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402  (after the variable above)

keras = tf.keras
# tf.keras on TF 2.15 and Keras 3 carry a __version__; tf_keras's API module does not, its package does.
VERSION = getattr(keras, "__version__", None) or importlib.import_module(keras.__name__.split(".")[0]).__version__
if not VERSION.startswith("2."):
    raise ImportError(f"the trainer needs Keras 2 (the tf-keras package), but tf.keras is Keras "
                      f"{VERSION}: TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set; "
                      "set it in the environment (export TF_USE_LEGACY_KERAS=1)")
