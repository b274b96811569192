# syntax=docker/dockerfile:1.7
# The GPU trainer: CUDA 12.2 + cuDNN 8.9 (what TensorFlow 2.15 is built against), the GPU build
# of the pinned TensorFlow, Horovod 0.28.1 compiled with NCCL (GPU allreduce), Gloo and Open MPI,
# and sshd for the MPIJob launcher to reach the workers (as non-root, the mpi-operator way).
#
#   docker build -f infra/docker/trainer-gpu.Dockerfile -t image-classifier/trainer-gpu:0.1.0 .
#
# Build context: the repository root (the project is installed from this checkout).
ARG CUDA_TAG=12.2.2-cudnn8

# ---- build: Horovod needs nvcc, NCCL headers and MPI headers to compile -----------------------
FROM nvidia/cuda:${CUDA_TAG}-devel-ubuntu22.04 AS build
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-dev python3.11-venv g++ cmake make git \
        libopenmpi-dev openmpi-bin libnccl2 libnccl-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.txt requirements-horovod.txt ./
# The CPU pin becomes the GPU build of the same TensorFlow version.
RUN sed 's/^tensorflow-cpu==/tensorflow==/' requirements.txt > requirements-gpu.txt \
    && pip install --no-cache-dir pip==24.3.1 setuptools==75.8.0 wheel==0.45.1 \
    && pip install --no-cache-dir -r requirements-gpu.txt
RUN HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED \
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    pip install --no-cache-dir --no-build-isolation -r requirements-horovod.txt \
    && horovodrun --check-build
COPY setup.py README.md ./
COPY pipeline ./pipeline
COPY trainer ./trainer
COPY infra ./infra
RUN pip install --no-cache-dir --no-deps .

# ---- runtime: CUDA runtime + cuDNN, NCCL, Open MPI, sshd; the venv from the build stage --------
FROM nvidia/cuda:${CUDA_TAG}-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 libnccl2 openmpi-bin libopenmpi3 openssh-server openssh-client \
        dnsutils ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/run/sshd
# MPIJob workers run sshd as an unprivileged user on port 2222; the operator mounts the keys.
RUN sed -i 's/[ #]\(.*StrictHostKeyChecking \).*/ \1no/g' /etc/ssh/ssh_config \
    && echo "    UserKnownHostsFile /dev/null" >> /etc/ssh/ssh_config \
    && echo "    Port 2222" >> /etc/ssh/ssh_config \
    && useradd -m -u 1000 mpiuser \
    && printf 'PidFile /home/mpiuser/sshd.pid\nHostKey /home/mpiuser/.ssh/id_rsa\nStrictModes no\nPort 2222\n' \
        > /home/mpiuser/.sshd_config && chown mpiuser /home/mpiuser/.sshd_config
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2 \
    NCCL_DEBUG=WARN \
    HOROVOD_GPU_OPERATIONS=NCCL
USER 1000
WORKDIR /home/mpiuser
# The launcher gets mpirun ... python -m trainer from the MPIJob; this is a sane default.
CMD ["python", "-m", "trainer", "--help"]
