"""Speed measured as ratios against a baseline run in the same script (README "Benchmarks")."""
import os as _os

# Keras 2 for the trainer's modules (README "Versions"): before any benchmark imports TensorFlow.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
