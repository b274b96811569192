#!/usr/bin/env bash
# Build Horovod from its PyPI source distribution with the project's own patch
# (infra/setup/horovod-<version>.patch, each hunk says why), against the TensorFlow already
# installed in the environment of the given pip; then fail unless `horovodrun --check-build`
# lists TensorFlow, Gloo and MPI.   usage: horovod.sh BIN_DIR   (the venv's bin/: pip, horovodrun)
# The version and the sdist's sha256 come from requirements-horovod.txt. Used by venv.sh and the
# GPU Dockerfile; HOROVOD_* variables already set (e.g. HOROVOD_GPU_OPERATIONS=NCCL) are kept.
set -euo pipefail
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PINS=${HOROVOD_REQUIREMENTS:-$ROOT/requirements-horovod.txt}
PIP="$BIN/pip --disable-pip-version-check -q"

VERSION=$(sed -n 's/^horovod==\([0-9.]*\)$/\1/p' "$PINS")
SHA256=$(sed -n "s/^# sha256 horovod-$VERSION.tar.gz: \([0-9a-f]\{64\}\)$/\1/p" "$PINS")
PATCH=$HERE/horovod-$VERSION.patch
[ -n "$VERSION" ] && [ -n "$SHA256" ] || { echo "horovod.sh: no horovod==X pin with its sha256 in $PINS" >&2; exit 1; }
[ -f "$PATCH" ] || { echo "horovod.sh: $PATCH is missing" >&2; exit 1; }

SRC=$(mktemp -d); trap 'rm -rf "$SRC"' EXIT
$PIP download --no-deps --no-binary :all: --no-cache-dir -d "$SRC" "horovod==$VERSION"
echo "$SHA256  $SRC/horovod-$VERSION.tar.gz" | sha256sum --check --quiet - \
  || { echo "horovod.sh: horovod-$VERSION.tar.gz does not have the sha256 in $PINS" >&2; exit 1; }
tar -xzf "$SRC/horovod-$VERSION.tar.gz" -C "$SRC"
# --forward --batch: a hunk that does not apply fails the build instead of asking or reversing.
patch -p1 --forward --batch --no-backup-if-mismatch -d "$SRC/horovod-$VERSION" < "$PATCH"

export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 \
       HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)"
start=$(date +%s)
# --no-build-isolation: compile against the TensorFlow installed here, not a fresh one.
# --no-cache-dir: a wheel cached from another TensorFlow would load and then crash.
$PIP install --no-build-isolation --no-cache-dir "$SRC/horovod-$VERSION"
echo "horovod.sh: Horovod $VERSION (patched) built in $(( $(date +%s) - start )) s"

CHECK=$("$BIN/horovodrun" --check-build 2>/dev/null)
echo "$CHECK"
for part in TensorFlow Gloo MPI; do
  grep -q "^ *\[X\] $part *$" <<<"$CHECK" \
    || { echo "horovod.sh: horovodrun --check-build does not list $part as built" >&2; exit 1; }
done
