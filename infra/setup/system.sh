#!/usr/bin/env bash
# System packages the project needs on Debian 12: the MPI + compiler toolchain Horovod builds
# against, the Fashion-MNIST data the demo trains on, sshd and iproute2 for the two-host test
# (infra/local/hosts.py: horovodrun ssh's into two network namespaces of this machine), strace (the
# durability test reads the order of fsync and rename calls: tests/test_local_durability.py), Java for
# the local Cassandra, and kubectl (its built-in kustomize renders k8s/ in the tests), and the
# Python the virtualenv is built with ($PYTHON, chosen by infra/setup/python.sh) with its venv and
# header packages when the distribution has them and they are missing. Quick when all are there
# already.
set -euo pipefail
PACKAGES=(openmpi-bin libopenmpi-dev cmake g++ make patch dataset-fashion-mnist openssh-server iproute2 strace)
PYTHON=${PYTHON:-python3.11}
# Commands that may come from elsewhere (Node's own npm, another JDK): a package only if missing.
declare -A FOR_COMMAND=([java]=openjdk-17-jre-headless [npm]=npm)
# kubectl comes from the Kubernetes/Google Cloud apt repository, not Debian's own: installed when
# a configured repository has it, else the kustomize tests say they were skipped.
OPTIONAL=(kubectl)
# python3.X itself, python3.X-venv (ensurepip) and python3.X-dev (Python.h, for Horovod's build),
# for a Python named like the distribution names it; a pyenv or other own build is left alone.
if [[ $PYTHON =~ ^python3\.[0-9]+$ ]]; then
  if ! "$PYTHON" -c 'import sys' >/dev/null 2>&1; then
    PACKAGES+=("$PYTHON" "$PYTHON-venv" "$PYTHON-dev")
  else
    "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1 || PACKAGES+=("$PYTHON-venv")
    "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      || PACKAGES+=("$PYTHON-dev")
  fi
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
for c in "${!FOR_COMMAND[@]}"; do command -v "$c" >/dev/null || missing+=("${FOR_COMMAND[$c]}"); done
optional=()
for p in "${OPTIONAL[@]}"; do command -v "$p" >/dev/null || optional+=("$p"); done
[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
for p in "${optional[@]}"; do
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" \
    || echo "note: $p is not in any configured apt repository; tests that need it will skip"
done
