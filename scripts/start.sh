#!/usr/bin/env bash
# Builds everything and runs the demo as a deployment is shaped:
#   - the app (scripts/demo-app-server.mjs) at PORT: the Leptos page and a
#     token endpoint that gives each visitor a short-lived token for the one
#     session they open (what your app's backend does);
#   - the durable-session server at API_PORT with --auth jwt, verifying those
#     tokens with a dev key generated once into the data dir, allowing the
#     app's origin;
#   - the demo agents, with an agent token minted by the server's `token`
#     command.
#   PORT (default 8080), API_PORT (default PORT+1) and HOST (default
#   127.0.0.1; 0.0.0.0 lets a phone on your network join) choose the
#   addresses; DATA_DIR (default .data) the store; AGENT_TOKENS_PER_SECOND
#   (default 20) the simulated model's pace.
# Extra arguments go to the server, e.g. npm start -- --long-poll-timeout-ms 5000
set -euo pipefail
cd "$(dirname "$0")/.."

host=${HOST:-127.0.0.1}
port=${PORT:-8080}
api_port=${API_PORT:-$((port + 1))}
data=${DATA_DIR:-.data}
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

# A development key, made once. Deployments bring their own (docs/security.md).
mkdir -p "$data"
key="$data/dev-hs256.key"
if [ ! -s "$key" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 > "$key")
  echo "[start] generated a development signing key in $key"
fi
jwt_key="hs256:dev:file:$key"
if [ "$host" = "0.0.0.0" ]; then
  origins=(--allow-origin '*')
else
  origins=(--allow-origin "http://127.0.0.1:$port" --allow-origin "http://localhost:$port")
fi

# Prints the URL that process $1 announces in log $2 ("listening on URL"),
# waiting up to 10 s; prints nothing if it exits or never says.
url_of() {
  local url=""
  for _ in $(seq 1 100); do
    url=$(grep -o 'listening on http://[^ ]*' "$2" | head -1 | sed 's/.*listening on //') || true
    [ -n "$url" ] && break
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  echo "$url"
}

log=$(mktemp)
target/release/durable-session-server --listen "$host:$api_port" --data-dir "$data" \
  --auth jwt --jwt-key "$jwt_key" "${origins[@]}" "$@" > "$log" &
pids+=($!)
url=$(url_of "$!" "$log")
cat "$log"
if [ -z "$url" ]; then
  echo "[start] the server did not start (is port $api_port free? API_PORT=... picks another)" >&2
  exit 1
fi
tail -n +2 -f "$log" &
pids+=($!)

# The agents' token: every session, run events only, and the session index.
(umask 077 && target/release/durable-session-server token --jwt-key "$jwt_key" --sub demo-agent \
  --grant 'sessions/*:read,agent' --grant '_index/sessions:read' --ttl 30d > "$data/agent.jwt")
# AGENT_ARGS: more flags for the agent, e.g. a real model (README: "Point the
# demo at a local Ollama or vLLM"). The simulated model is the default.
read -r -a agent_args <<< "${AGENT_ARGS:-}"
target/release/durable-session-agent --server "http://127.0.0.1:$api_port" --token-file "$data/agent.jwt" \
  --tokens-per-second "${AGENT_TOKENS_PER_SECOND:-20}" "${agent_args[@]}" &
pids+=($!)

app_log=$(mktemp)
node scripts/demo-app-server.mjs --host "$host" --port "$port" --api-port "$api_port" \
  --key-file "$key" --kid dev > "$app_log" &
pids+=($!)
app=$(url_of "$!" "$app_log")
if [ -z "$app" ]; then
  cat "$app_log" >&2
  echo "[start] the app did not start (is port $port free? PORT=... picks another)" >&2
  exit 1
fi

echo
echo "  Demo:   $app/   (open it in two tabs; copy the URL with ?session=… to another device)"
echo "  API:    $url/v1/stream/...   WebSocket: ${url/http/ws}/v1/ws   (tokens required: docs/security.md)"
echo "  Ctrl-C stops everything."
echo
wait -n "${pids[@]}"
