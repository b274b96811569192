"""The Horovod trainer: reads a published dataset (manifest + shards), trains, checkpoints.

  train.py     the training story, top to bottom, for one rank (start here)
  __main__.py  python -m trainer: flags in, one line and an exit code out
  flags.py     the flags; config.py turns them once into a typed TrainConfig
  errors.py    the errors that are the user's to fix, and the exit codes
  keras.py     the one place Keras (2) comes from
  input/       one rank's input: its share, order, augmentation, batches
  model/       models, heads, loss, learning rate, precision
  state/       checkpoints and warm starts
  runtime/     the fit loop, its callbacks, guards, devices, agreement over ranks
  results/     rank 0's end: test scores, export, plots, report"""
import os as _os

# Keras 2 for horovod.tensorflow.keras: with TensorFlow >= 2.16, tf.keras is the tf_keras package
# only when this is set before TensorFlow is imported (README "Versions").
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
