#!/usr/bin/env bash
# Builds and runs the reference server on its embedded SQLite store.
# Flags are passed through: npm start -- --listen 0.0.0.0:4437 --data-dir /tmp/ds
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "[start] building durable-session-server (release)"
cargo build --release --quiet -p durable-session-server
exec target/release/durable-session-server "$@"
