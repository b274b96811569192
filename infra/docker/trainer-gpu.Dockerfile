# syntax=docker/dockerfile:1.7
# The GPU trainer: CUDA 12.5 + cuDNN 9.3 (what TensorFlow 2.21 is built against, TF's tested build
# configurations), the GPU build of the pinned TensorFlow with tf-keras, Horovod 0.28.1 built from
# its sdist with our patch (infra/setup/horovod.sh) with NCCL (GPU allreduce), Gloo and Open MPI,
# and sshd for the MPIJob launcher to reach the workers (as non-root, the mpi-operator way).
#
#   docker build -f infra/docker/trainer-gpu.Dockerfile -t image-classifier/trainer-gpu:0.1.0 .
#
# The TensorFlow 2.15 pin set (CUDA 12.2 + cuDNN 8.9, for older drivers) is the same file with:
#   --build-arg REQUIREMENTS=requirements-tf215.txt --build-arg CUDA_TAG=12.2.2-cudnn8 \
#   --build-arg CUDNN_PACKAGE=
#
# Build context: the repository root (the project is installed from this checkout).
# CUDA_TAG: the nvidia/cuda tag before -devel/-runtime; CUDNN_PACKAGE: the cuDNN the runtime
# stage adds from NVIDIA's apt repository (empty when the tag brings its own, as -cudnn8 does).
ARG CUDA_TAG=12.5.1
ARG CUDNN_PACKAGE=libcudnn9-cuda-12=9.3.0.75-1
ARG REQUIREMENTS=requirements.txt

# ---- build: Horovod needs nvcc, NCCL headers and MPI headers to compile -----------------------
FROM nvidia/cuda:${CUDA_TAG}-devel-ubuntu22.04 AS build
ARG REQUIREMENTS
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-dev python3.11-venv g++ cmake make git patch \
        libopenmpi-dev openmpi-bin libnccl2 libnccl-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements*.txt ./
COPY infra/setup/pip-install.sh infra/setup/horovod.sh infra/setup/horovod-0.28.1.patch infra/setup/
# The CPU pin becomes the GPU build of the same TensorFlow version (tf-keras is then satisfied).
RUN sed 's/^tensorflow-cpu==/tensorflow==/' "$REQUIREMENTS" > requirements-gpu.txt \
    && pip install --no-cache-dir pip==24.3.1 setuptools==75.8.0 wheel==0.45.1 \
    && bash infra/setup/pip-install.sh "pip --no-cache-dir" requirements-gpu.txt
# infra/setup/horovod.sh: the sdist of -r requirements-horovod.txt (sha256 checked), our patch,
# HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1, and horovodrun --check-build
# must list TensorFlow, Gloo and MPI; here NCCL too.
RUN HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED bash infra/setup/horovod.sh /opt/venv/bin \
    && horovodrun --check-build > /tmp/check-build.txt 2>/dev/null \
    && grep -q '^ *\[X\] NCCL *$' /tmp/check-build.txt && rm /tmp/check-build.txt
COPY setup.py README.md ./
COPY pipeline ./pipeline
COPY trainer ./trainer
COPY infra ./infra
RUN pip install --no-cache-dir --no-deps .

# ---- runtime: CUDA runtime + cuDNN, NCCL, Open MPI, sshd; the venv from the build stage --------
FROM nvidia/cuda:${CUDA_TAG}-runtime-ubuntu22.04
ARG CUDNN_PACKAGE
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 libnccl2 openmpi-bin libopenmpi3 openssh-server openssh-client \
        dnsutils ca-certificates ${CUDNN_PACKAGE} \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/run/sshd
# MPIJob workers run sshd as an unprivileged user on port 2222. mpi-operator's per-job key (at
# sshAuthMountPath) logs mpiuser in; the host key and known_hosts are the Secret
# trainer-ssh-host-keys the cluster operator generates (k8s/ssh-host-keys.sh), mounted at
# /etc/ssh/trainer: workers serve that key and ssh accepts no host its known_hosts does not name
# (StrictHostKeyChecking yes), so a pod posing as a worker gets neither the ranks nor the -x
# variables (S3 credentials). `ssh -G` (prints the settings, connects nowhere) proves they are in force.
# hadolint ignore=DL3001
RUN useradd -m -u 1000 mpiuser \
    && printf 'Host *\n    Port 2222\n    StrictHostKeyChecking yes\n    UserKnownHostsFile /etc/ssh/trainer/known_hosts\n    GlobalKnownHostsFile /dev/null\n    CheckHostIP no\n' \
        > /etc/ssh/ssh_config.d/trainer.conf \
    && ssh -G trainer-worker-0 > /tmp/ssh-settings \
    && grep -qx 'stricthostkeychecking true' /tmp/ssh-settings && rm /tmp/ssh-settings \
    && printf 'PidFile /home/mpiuser/sshd.pid\nHostKey /etc/ssh/trainer/ssh_host_ed25519_key\nStrictModes no\nPort 2222\nPasswordAuthentication no\nAcceptEnv *SECRET* *PASSWORD* *PASSWD* *TOKEN* *CREDENTIAL* *PRIVATE*\n' \
        > /home/mpiuser/.sshd_config && chown mpiuser /home/mpiuser/.sshd_config
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_USE_LEGACY_KERAS=1 \
    NCCL_DEBUG=WARN \
    HOROVOD_GPU_OPERATIONS=NCCL
USER 1000
WORKDIR /home/mpiuser
# The launcher gets mpirun ... python -m trainer from the MPIJob; this is a sane default.
CMD ["python", "-m", "trainer", "--help"]
