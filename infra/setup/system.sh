#!/usr/bin/env bash
# System packages the project needs on Debian 12: the MPI + compiler toolchain Horovod builds
# against, and the Fashion-MNIST data the demo trains on. Quick when all are there already.
set -euo pipefail
PACKAGES=(openmpi-bin libopenmpi-dev cmake g++ make dataset-fashion-mnist)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
