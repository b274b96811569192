#!/usr/bin/env bash
# Build the project's virtualenv at $1: a pin set ($REQUIREMENTS, default requirements.txt;
# `make ... TF=2.15` passes requirements-tf215.txt), then Horovod compiled from its PyPI sdist
# with our patch against the installed TensorFlow (horovod.sh), then the dev tools (a cheap
# layer, redone when its pins change). Completion stamps mean an interrupted build is never
# mistaken for a usable one. The Makefile names the venv after a hash of what goes into it.
set -euo pipefail
VENV=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3.11}
REQUIREMENTS=${REQUIREMENTS:-requirements.txt}
case $REQUIREMENTS in /*) ;; *) REQUIREMENTS=$ROOT/$REQUIREMENTS ;; esac
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

"$PY" -c 'import ensurepip' 2>/dev/null || {
  echo "venv.sh: $PY is missing or has no venv support (Debian: apt-get install $PY-venv $PY-dev)" >&2
  exit 1; }
# venvs are not relocatable, so build in place and mark completion with a stamp.
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
echo "building virtualenv $VENV with $PY and $(basename "$REQUIREMENTS")" \
     "(Horovod compiles from source: ~10 minutes on 2 cores)"
start=$(date +%s)
"$PY" -m venv "$VENV"
$PIP install --upgrade "pip<25" "setuptools<80" wheel
bash "$ROOT/infra/setup/pip-install.sh" "$PIP" "$REQUIREMENTS"
bash "$ROOT/infra/setup/horovod.sh" "$VENV/bin"
cp "$REQUIREMENTS" "$VENV/requirements.txt"   # which pin set this venv holds, for a look later
touch "$VENV/.complete"
echo "venv.sh: virtualenv built in $(( $(date +%s) - start )) s"
install_dev_tools
