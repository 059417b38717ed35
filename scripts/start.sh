#!/usr/bin/env bash
# Builds everything and runs the demo: the server (embedded SQLite) serving
# the Leptos app, the HTTP API and /v1/ws on one origin, plus the demo agents.
#   PORT (default 8080) and HOST (default 127.0.0.1; 0.0.0.0 lets a phone on
#   your network join) choose the address; DATA_DIR (default .data) the store;
#   AGENT_TOKENS_PER_SECOND (default 20) the simulated model's pace.
# Extra arguments go to the server, e.g. npm start -- --long-poll-timeout-ms 5000
set -euo pipefail
cd "$(dirname "$0")/.."

host=${HOST:-127.0.0.1}
port=${PORT:-8080}
bash scripts/setup.sh
echo "[start] building the server and the agents (release)"
cargo build --release --quiet -p durable-session-server -p durable-session-agent
bash scripts/build-demo.sh

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

log=$(mktemp)
target/release/durable-session-server --listen "$host:$port" --data-dir "${DATA_DIR:-.data}" \
  --static-dir target/demo "$@" > "$log" &
pids+=($!)
url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'listening on http://[^ ]*' "$log" | head -1 | sed 's/listening on //') || true
  [ -n "$url" ] && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then break; fi
  sleep 0.1
done
cat "$log"
if [ -z "$url" ]; then
  echo "[start] the server did not start (is port $port free? PORT=... picks another)" >&2
  exit 1
fi
tail -n +2 -f "$log" &
pids+=($!)

target/release/durable-session-agent --server "http://127.0.0.1:$port" \
  --tokens-per-second "${AGENT_TOKENS_PER_SECOND:-20}" &
pids+=($!)

echo
echo "  Demo:   $url/   (open it in two tabs; copy the URL with ?session=… to another device)"
echo "  API:    $url/v1/stream/...   WebSocket: ${url/http/ws}/v1/ws"
echo "  Ctrl-C stops everything."
echo
wait -n "${pids[@]}"
