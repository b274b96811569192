"""The Horovod trainer: reads a published dataset (manifest + shards), trains, checkpoints."""
import os as _os

# Keras 2 for horovod.tensorflow.keras: with TensorFlow >= 2.16, tf.keras is the tf_keras package
# only when this is set before TensorFlow is imported (README "Versions").
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
