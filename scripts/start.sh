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
# With --nodes N (2 or more): a redis-server (Debian's, durable settings, a
# temp dir, a free loopback port) and N server nodes on it at API_PORT,
# API_PORT+1, …; the agents on node 2 (failing over to the others), the page
# on node 1 (failing over to the others). `--help` says more.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
Usage: npm start [-- [--nodes N] [SERVER FLAGS…]]
       bash scripts/start.sh [--nodes N] [SERVER FLAGS…]

Builds the server, the agents and the demo, then serves the demo app, the
durable-session server(s) and the demo agents until Ctrl-C, which stops them all.

  --nodes N   1 (default): one server on SQLite in DATA_DIR.
              2 or more: starts redis-server (Debian's package) with the durable
              settings (appendonly yes, appendfsync always, noeviction) in a temp
              dir on a free loopback port, and N server nodes on it
              (--store redis://127.0.0.1:PORT/0) on ports API_PORT, API_PORT+1, …
              The agents join node 2 (then the others, in turn, if it fails);
              the page talks to node 1 and fails over to the others by itself:
              kill -9 node 1 mid-answer and watch the tab move on.
  -h, --help  this text.

Other flags go to every server node, e.g. npm start -- --long-poll-timeout-ms 5000.

Environment: PORT (the app, default 8080), API_PORT (the first node, default
PORT+1), HOST (default 127.0.0.1; 0.0.0.0 lets a phone on your network join),
DATA_DIR (default .data: the SQLite store and the development key),
AGENT_TOKENS_PER_SECOND (default 20: the simulated model's pace).
EOF
}

nodes=1
server_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --nodes) [ $# -ge 2 ] || { echo "[start] --nodes needs a number" >&2; exit 2; }; nodes=$2; shift 2 ;;
    --nodes=*) nodes=${1#--nodes=}; shift ;;
    *) server_args+=("$1"); shift ;;
  esac
done
if ! [[ "$nodes" =~ ^[1-9]$ ]]; then
  echo "[start] --nodes takes a number from 1 to 9, not '$nodes'" >&2
  exit 2
fi

host=${HOST:-127.0.0.1}
port=${PORT:-8080}
api_port=${API_PORT:-$((port + 1))}
data=${DATA_DIR:-.data}
bash scripts/setup.sh
echo "[start] building the server and the agents (release)"
cargo build --release --quiet -p durable-session-server -p durable-session-agent
bin=${CARGO_TARGET_DIR:-target}/release
bash scripts/build-demo.sh

# Everything started here, stopped on exit (Ctrl-C included): no orphans.
# The script ends when one of `essential` exits: with several nodes a node
# may die (that is the point), and the rest go on.
pids=()
essential=()
run=$(mktemp -d "${TMPDIR:-/tmp}/durable-start.XXXXXX")
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# Prints what process $1 announces in log $2 after "$3" (the rest of that
# word), waiting up to 10 s; prints nothing if it exits or never says.
announced() {
  local found=""
  for _ in $(seq 1 100); do
    found=$(grep -o "$3[^ ]*" "$2" | head -1 | sed "s|^$3||") || true
    [ -n "$found" ] && break
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  echo "$found"
}

store=()
if [ "$nodes" -gt 1 ]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "[start] redis-server is missing: bash scripts/setup.sh installs it" >&2
    exit 1
  fi
  # A free loopback port (another process may still take it first: then
  # redis-server says so and we stop).
  redis_port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
  mkdir "$run/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$run/redis" --appendonly yes --appendfsync always \
    --save "" --maxmemory-policy noeviction > "$run/redis.log" 2>&1 &
  pids+=($!)
  essential+=($!)
  ready=$(announced "$!" "$run/redis.log" "Ready to accept ")
  if [ -z "$ready" ]; then
    cat "$run/redis.log" >&2
    echo "[start] redis-server did not start" >&2
    exit 1
  fi
  store=(--store "redis://127.0.0.1:$redis_port/0")
  echo "[start] redis-server on 127.0.0.1:$redis_port (appendonly yes, appendfsync always) in $run/redis"
fi

urls=()
logs=()
for i in $(seq 1 "$nodes"); do
  node_port=$((api_port + i - 1))
  log="$run/node-$i.log"
  "$bin"/durable-session-server --listen "$host:$node_port" --data-dir "$data" "${store[@]}" \
    --auth jwt --jwt-key "$jwt_key" "${origins[@]}" "${server_args[@]}" > "$log" &
  pids+=($!)
  if [ "$nodes" -eq 1 ]; then essential+=($!); fi
  url=$(announced "$!" "$log" "listening on ")
  cat "$log"
  if [ -z "$url" ]; then
    echo "[start] server node $i did not start (is port $node_port free? API_PORT=... picks another)" >&2
    exit 1
  fi
  if [ "$nodes" -gt 1 ]; then echo "[start] node $i (pid $!) listening on $url"; fi
  urls+=("$url")
  logs+=("$log")
done
# The nodes' logs from now on (with several, tail names the node's file).
tail -n +2 -f "${logs[@]}" &
pids+=($!)

# The agents' token: every session, run events only, and the session index.
(umask 077 && "$bin"/durable-session-server token --jwt-key "$jwt_key" --sub demo-agent \
  --grant 'sessions/*:read,agent' --grant '_index/sessions:read' --ttl 30d > "$data/agent.jwt")
# One node: that node. Several: node 2 first, then the others in turn.
agent_servers=()
for i in $(seq 1 "$nodes"); do
  n=$(( (i % nodes) + 1 ))
  agent_servers+=(--server "http://127.0.0.1:$((api_port + n - 1))")
done
# AGENT_ARGS: more flags for the agent, e.g. a real model (README: "Point the
# demo at a local Ollama or vLLM"). The simulated model is the default.
read -r -a agent_args <<< "${AGENT_ARGS:-}"
"$bin"/durable-session-agent "${agent_servers[@]}" --token-file "$data/agent.jwt" \
  --tokens-per-second "${AGENT_TOKENS_PER_SECOND:-20}" "${agent_args[@]}" &
pids+=($!)
essential+=($!)

# The page gets every node, node 1 first (the app's /token answer).
node_ports=$(seq -s, "$api_port" "$((api_port + nodes - 1))")
node scripts/demo-app-server.mjs --host "$host" --port "$port" --api-port "$node_ports" \
  --key-file "$key" --kid dev > "$run/app.log" &
pids+=($!)
essential+=($!)
app=$(announced "$!" "$run/app.log" "app listening on ")
if [ -z "$app" ]; then
  cat "$run/app.log" >&2
  echo "[start] the app did not start (is port $port free? PORT=... picks another)" >&2
  exit 1
fi

echo
echo "  Demo:   $app/   (open it in two tabs; copy the URL with ?session=… to another device)"
if [ "$nodes" -eq 1 ]; then
  echo "  API:    ${urls[0]}/v1/stream/...   WebSocket: ${urls[0]/http/ws}/v1/ws   (tokens required: docs/security.md)"
else
  for i in "${!urls[@]}"; do
    echo "  Node $((i + 1)): ${urls[$i]}/v1/stream/...   WebSocket: ${urls[$i]/http/ws}/v1/ws"
  done
  echo "  The page talks to node 1 and the agents to node 2, each failing over to the other nodes;"
  echo "  all share redis://127.0.0.1:$redis_port/0. Kill node 1 mid-answer (kill -9 PID above) to watch a tab move on."
fi
echo "  Ctrl-C stops everything."
echo
wait -n "${essential[@]}"
