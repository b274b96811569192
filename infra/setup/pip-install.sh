#!/usr/bin/env bash
# Install a pin set (requirements*.txt) with the given pip: pip-install.sh PIP REQUIREMENTS [ARGS]
# Everything resolves as usual except tf-keras, which is installed with --no-deps: it requires
# the distribution named `tensorflow`, and pip would fetch that (another ~600 MB build of the
# same package) beside tensorflow-cpu, which ships the same `tensorflow` package under another
# name. On an image that pins `tensorflow` itself (the GPU one) this changes nothing.
# Used by venv.sh and by both Dockerfiles.
set -euo pipefail
PIP=$1 REQUIREMENTS=$2; shift 2
NO_DEPS='^(tf-keras|tf_keras)[=<>~! ]'
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
grep -Ev "$NO_DEPS" "$REQUIREMENTS" > "$TMP/requirements.txt"
grep -E "$NO_DEPS" "$REQUIREMENTS" > "$TMP/no-deps.txt" || true
$PIP install "$@" -r "$TMP/requirements.txt"
if [ -s "$TMP/no-deps.txt" ]; then
  $PIP install "$@" --no-deps -r "$TMP/no-deps.txt"
fi
