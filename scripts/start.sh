#!/usr/bin/env bash
# Builds and runs the reference server (embedded SQLite) and the demo agents.
# Server flags are passed through, e.g.:
#   npm start -- --listen 0.0.0.0:4437 --data-dir /tmp/ds
# AGENT_TOKENS_PER_SECOND (default 20) sets the simulated model's pace.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "[start] building durable-session-server and durable-session-agent (release)"
cargo build --release --quiet -p durable-session-server -p durable-session-agent

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# The server prints "listening on http://ADDR" once it accepts connections.
fifo=$(mktemp -u)
mkfifo "$fifo"
target/release/durable-session-server "$@" > "$fifo" &
pids+=($!)
url=""
while IFS= read -r line; do
  echo "$line"
  if [[ "$line" =~ listening\ on\ (http://[^[:space:]]+) ]]; then
    url="${BASH_REMATCH[1]}"
    break
  fi
done < "$fifo"
# Keep relaying the server's stdout.
cat "$fifo" &
pids+=($!)
rm -f "$fifo"
if [ -z "$url" ]; then
  echo "[start] the server did not start" >&2
  exit 1
fi
agent_url="${url/0.0.0.0/127.0.0.1}"

target/release/durable-session-agent --server "$agent_url" \
  --tokens-per-second "${AGENT_TOKENS_PER_SECOND:-20}" &
pids+=($!)

echo "[start] server: $url   (HTTP: $url/v1/stream/..., WebSocket: ${url/http/ws}/v1/ws)"
echo "[start] agents answer every session under sessions/; Ctrl-C stops everything"
wait -n "${pids[@]}"
