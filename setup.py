"""Image classifier training pipeline: Beam ingestion -> sharded TFRecords -> Horovod trainer."""
from setuptools import find_packages, setup


def pins(path, leave_out=("tf-keras",)):
    """A requirements file's pins; tf-keras is left out: it requires the distribution named
    `tensorflow`, which would come on top of tensorflow-cpu (install it with --no-deps)."""
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [line for line in lines if not line.startswith(leave_out)]


setup(
    name="image-classifier-pipeline",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "trainer", "trainer.*",
                                    "infra", "infra.*"]),
    install_requires=pins("requirements.txt"),
    # Horovod compiles against the installed TensorFlow: install it after the rest, with
    # --no-build-isolation (see infra/setup/venv.sh).
    extras_require={"horovod": pins("requirements-horovod.txt"), "dev": pins("requirements-dev.txt")},
    entry_points={"console_scripts": [
        "ingest-images=pipeline.__main__:main",
        "train-classifier=trainer.__main__:main",
        "pipeline-demo=infra.demo:main",
    ]},
)
