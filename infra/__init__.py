"""What runs the system around the job and the trainer: local/ (stand-ins for production
services on loopback, demo data), nightly/ (the nightly retrain), demo.py (the end-to-end run),
setup/ and docker/ (system packages, the virtualenv, container images). Nothing outside infra/,
tests/ and benchmarks/ imports from here."""
import os as _os

# Keras 2 for horovod.tensorflow.keras: with TensorFlow >= 2.16, tf.keras is the tf_keras package
# only when this is set before TensorFlow is imported (README "Versions").
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
