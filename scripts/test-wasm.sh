#!/usr/bin/env bash
# The SDK in headless Chromium (wasm-bindgen-test): starts our server (with
# test hooks) and the demo agent, and the upstream Node reference server, on
# loopback; runs sdk/tests/web.rs against them; stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p durable-session-server -p durable-session-agent
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Starts a process whose first stdout line names its URL; sets $url.
start() {
  local log="$tmp/$1.log"
  shift
  "$@" > "$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    url=$(grep -o 'listening on http://[^ ]*' "$log" | head -1 | sed 's/listening on //') || true
    [ -n "$url" ] && return 0
    sleep 0.1
  done
  echo "failed to start: $*" >&2
  cat "$log" >&2
  exit 1
}

start server target/debug/durable-session-server --listen 127.0.0.1:0 --data-dir "$tmp/data" --test-hooks --auth none
server=$url
target/debug/durable-session-agent --server "$server" --tokens-per-second 40 --answer-tokens 80 > "$tmp/agent.log" 2>&1 &
pids+=($!)
start node node tests/support/node-ds-server.mjs 0
node_server=$url
echo "[wasm tests] our server $server (with agent), Node reference server $node_server"

export DS_SERVER=$server DS_NODE_SERVER=$node_server
export CHROMEDRIVER=/usr/bin/chromedriver
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=120
cargo test -p durable-sessions --target wasm32-unknown-unknown --features web --test web
