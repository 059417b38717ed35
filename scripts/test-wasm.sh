#!/usr/bin/env bash
# The SDK in headless Chromium (wasm-bindgen-test): starts our server (with
# test hooks) and the demo agent, our server again with access control on
# (JWT, a random HS256 secret, 2 s grace after a token expires), the
# upstream Node reference server, and two fault proxies in front of our
# server (tests/support/fault-proxy.mjs: told by the tests to answer 503
# for a while, or to die like a node of a cluster), on loopback; runs
# sdk/tests/web.rs, sdk/tests/web_faults.rs and sdk/tests/leptos_hooks.rs
# against them; stops them. Honours CARGO_TARGET_DIR; arguments filter the
# tests by name (e.g. `bash scripts/test-wasm.sh token`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p durable-session-server -p durable-session-agent
bin=${CARGO_TARGET_DIR:-target}/debug
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

start server "$bin/durable-session-server" --listen 127.0.0.1:0 --data-dir "$tmp/data" --test-hooks --auth none
server=$url
head -c 32 /dev/urandom | base64 > "$tmp/test.key"
start auth-server "$bin/durable-session-server" --listen 127.0.0.1:0 --data-dir "$tmp/auth-data" --test-hooks \
  --auth jwt --jwt-key "hs256:test:file:$tmp/test.key" --allow-origin '*' --auth-grace-ms 2000
auth_server=$url
"$bin/durable-session-agent" --server "$server" --tokens-per-second 40 --answer-tokens 80 > "$tmp/agent.log" 2>&1 &
pids+=($!)
start node node tests/support/node-ds-server.mjs 0
node_server=$url
start proxy node tests/support/fault-proxy.mjs 0 "$server"
proxy=$url
# A second "node" of the same cluster (the same server, so one log).
start proxy-b node tests/support/fault-proxy.mjs 0 "$server"
proxy_b=$url
echo "[wasm tests] our server $server (with agent), with auth $auth_server, Node reference server $node_server, fault proxies $proxy $proxy_b"

export DS_SERVER=$server DS_AUTH_SERVER=$auth_server DS_NODE_SERVER=$node_server DS_PROXY=$proxy DS_PROXY_B=$proxy_b
export CHROMEDRIVER=/usr/bin/chromedriver
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=300
cargo test -p durable-sessions --target wasm32-unknown-unknown --features web --test web --test web_faults -- "$@"
# The Leptos hooks (their own build: the `leptos` feature).
cargo test -p durable-sessions --target wasm32-unknown-unknown --features web,leptos --test leptos_hooks -- "$@"
