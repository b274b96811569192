#!/usr/bin/env bash
# Build the project's virtualenv at $1: pinned requirements, then Horovod compiled against
# the installed TensorFlow. Written to a temporary path and renamed when complete, so an
# interrupted build is never mistaken for a usable one.
set -euo pipefail
VENV=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3.11}
[ -x "$VENV/bin/python" ] && [ -f "$VENV/.complete" ] && exit 0

# venvs are not relocatable, so build in place and mark completion with a stamp.
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
echo "building virtualenv $VENV (Horovod compiles from source: ~10 minutes on 2 cores)"
"$PY" -m venv "$VENV"
PIP="$VENV/bin/pip --disable-pip-version-check -q"
$PIP install --upgrade "pip<25" "setuptools<80" wheel
$PIP install -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt"
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
       HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)"
# --no-cache-dir: a wheel cached from another TensorFlow would load and then crash.
$PIP install --no-build-isolation --no-cache-dir -r "$ROOT/requirements-horovod.txt"
"$VENV/bin/horovodrun" --check-build
touch "$VENV/.complete"
