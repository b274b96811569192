# syntax=docker/dockerfile:1.7
# The pipeline image: the Apache Beam Python SDK container (its /opt/apache/beam/boot entrypoint
# makes it a Beam SDK harness / worker pool for portable runners such as Flink) with the
# project and its pinned requirements (TensorFlow CPU and tf-keras included: the nightly scores
# models; TF_USE_LEGACY_KERAS=1 makes tf.keras the tf-keras package).
#
#   docker build -f infra/docker/pipeline.Dockerfile -t image-classifier/pipeline:0.1.0 .
#
# Build context: the repository root. Runs `python -m pipeline`, `python -m infra.nightly`, or
# (entrypoint /opt/apache/beam/boot --worker_pool) a Beam SDK worker pool beside Flink.
FROM apache/beam_python3.11_sdk:2.77.0
WORKDIR /opt/project
COPY requirements*.txt ./
COPY infra/setup/pip-install.sh infra/setup/
# The pinned set, tf-keras with --no-deps (pip-install.sh says why).
RUN bash infra/setup/pip-install.sh "pip --no-cache-dir" requirements.txt
COPY setup.py README.md ./
COPY pipeline ./pipeline
COPY trainer ./trainer
COPY infra ./infra
RUN pip install --no-cache-dir --no-deps . \
    && useradd -m -u 1000 pipeline
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    TF_USE_LEGACY_KERAS=1
USER 1000
ENTRYPOINT []
CMD ["python", "-m", "pipeline", "--help"]
