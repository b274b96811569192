#!/usr/bin/env bash
# System packages the project needs on Debian 12: the MPI + compiler toolchain Horovod
# builds against, Java for Cassandra, and the Fashion-MNIST data the demo trains on.
# Idempotent and quick when everything is already there.
set -euo pipefail
PACKAGES=(openmpi-bin libopenmpi-dev cmake g++ make dataset-fashion-mnist default-jre-headless npm)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A JRE or npm already on PATH (not from apt) is fine too.
missing=($(for p in "${missing[@]}"; do
  case $p in default-jre-headless) command -v java >/dev/null || echo "$p" ;;
             npm) command -v npm >/dev/null || echo "$p" ;;
             *) echo "$p" ;; esac; done))
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
