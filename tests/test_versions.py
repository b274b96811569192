"""Keras 2 everywhere the trainer runs: the project's packages set TF_USE_LEGACY_KERAS before
TensorFlow is imported, the trainer takes Keras from one module, and a process that imported
TensorFlow too early gets one clear line. Each check runs in a fresh interpreter without the
variable (the Makefile exports it; a user's shell does not)."""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                          text=True, capture_output=True, timeout=300)


def test_importing_the_trainer_gives_keras_2_and_horovod_its_keras_api():
    result = python("import trainer.keras as k, horovod.tensorflow.keras as hvd, tensorflow as tf; "
                    "print(k.VERSION, tf.keras.optimizers.legacy.SGD.__name__)")
    assert result.returncode == 0, result.stderr[-2000:]
    version, sgd = result.stdout.split()
    assert version.startswith("2.") and sgd == "SGD"


def test_tensorflow_imported_first_without_the_variable_is_one_clear_error():
    import tensorflow as tf
    if tf.__version__.startswith("2.15"):
        return          # TF 2.15's own tf.keras is Keras 2: nothing to refuse on this pin set
    result = python("import tensorflow as tf; tf.keras.layers; import trainer.keras")
    assert result.returncode != 0
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr and "Keras 2" in result.stderr


def test_the_trainer_takes_keras_from_one_module():
    found = [p.name for p in (ROOT / "trainer").rglob("*.py")
             if p.name != "keras.py" and re.search(r"\btf\.keras\.\w", p.read_text())]
    assert not found, f"these use tf.keras directly instead of trainer.keras: {found}"
