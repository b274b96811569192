#!/usr/bin/env bash
# Print the Python the virtualenv is built with for a pin set: python.sh REQUIREMENTS
# The pin set's "# pythons: 3.13 3.12 3.11" line lists the versions its TensorFlow has wheels
# for, newest first; the first python3.X that runs here wins (a pyenv shim for a version that
# is not selected does not run), else the first one the distribution's apt repositories have
# (system.sh then installs it), else python3.11. Only prints: the Makefile calls it.
set -uo pipefail
REQUIREMENTS=${1:-requirements.txt}
versions=$(sed -n 's/^# pythons: *//p' "$REQUIREMENTS" 2>/dev/null)
for v in $versions; do
  python$v -c 'import sys' >/dev/null 2>&1 && { echo "python$v"; exit 0; }
done
if command -v apt-cache >/dev/null; then
  for v in $versions; do
    apt-cache policy "python$v" 2>/dev/null | grep -q 'Candidate: [0-9]' && { echo "python$v"; exit 0; }
  done
fi
echo python3.11
