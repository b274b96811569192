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
  results/     rank 0's end: test scores, export, plots, report
  banners.py   TensorFlow's, absl's, horovodrun's and mpirun's noise kept off the terminal"""
import os as _os

# What TensorFlow reads when it is imported, set here, before any module imports it (every
# command that runs TensorFlow imports this package first; a variable already set wins):
# - Keras 2 for horovod.tensorflow.keras: with TensorFlow >= 2.16, tf.keras is the tf_keras
#   package only when TF_USE_LEGACY_KERAS is set (README "Versions");
# - TensorFlow's C++ logs: errors only (its INFO and WARNING lines at start-up say nothing a
#   user can act on; --verbose shows them: trainer/__main__.py). absl's start-up lines ignore
#   it: trainer/banners.py.
TENSORFLOW_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
for _name, _value in TENSORFLOW_ENV.items():
    _os.environ.setdefault(_name, _value)
