#!/usr/bin/env bash
# Build the project's virtualenv at $1: pinned requirements, then Horovod compiled against
# the installed TensorFlow, then the dev tools (a cheap layer, redone when its pins change).
# Completion stamps mean an interrupted build is never mistaken for a usable one.
set -euo pipefail
VENV=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3.11}
PIP="$VENV/bin/pip --disable-pip-version-check -q"
DEV_STAMP=".dev-$(sha256sum "$ROOT/requirements-dev.txt" | cut -c1-16)"

install_dev_tools() {
  [ -f "$VENV/$DEV_STAMP" ] && return 0
  $PIP install -r "$ROOT/requirements-dev.txt"
  rm -f "$VENV"/.dev-* && touch "$VENV/$DEV_STAMP"
}

if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.complete" ]; then
  install_dev_tools
  exit 0
fi

# venvs are not relocatable, so build in place and mark completion with a stamp.
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
echo "building virtualenv $VENV (Horovod compiles from source: ~10 minutes on 2 cores)"
"$PY" -m venv "$VENV"
$PIP install --upgrade "pip<25" "setuptools<80" wheel
$PIP install -r "$ROOT/requirements.txt"
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
       HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)"
# --no-cache-dir: a wheel cached from another TensorFlow would load and then crash.
$PIP install --no-build-isolation --no-cache-dir -r "$ROOT/requirements-horovod.txt"
"$VENV/bin/horovodrun" --check-build
touch "$VENV/.complete"
install_dev_tools
