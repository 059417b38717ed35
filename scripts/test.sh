#!/usr/bin/env bash
# Every test of the project: formatting and lints, the Rust unit and
# integration tests, and the public Durable Streams conformance suite against
# a freshly started server on each store (SQLite; Redis, with a redis-server of
# its own). Ends with one summary line of all counts.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
step() { printf '\n== %s\n' "$*"; }
# Runs a command, showing and recording its output.
run() { "$@" 2>&1 | tee -a "$log"; }

step "setup"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, native and wasm32, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy -p durable-sessions --target wasm32-unknown-unknown --features js,leptos --all-targets --quiet -- -D warnings

step "cargo test (unit, integration, doc tests; measurements are printed)"
run cargo test --workspace -- --show-output

step "Durable Streams conformance suite (@durable-streams/server-conformance-tests), on SQLite and on Redis"
run npx vitest run --config tests/vitest.config.mjs

step "SDK in headless Chromium (wasm-bindgen-test): our server + agent, and the Node reference server"
run bash scripts/test-wasm.sh

step "docs/security.md: its Node example against a real server with --auth jwt"
cargo build --quiet -p durable-session-server
run node --test tests/security/

step "npm package: build, TypeScript types (tsc --noEmit), pages importing it in Chromium (sessions, storage, client.stream)"
bash scripts/build-sdk.sh
npx tsc -p tests/package/tsconfig.json
run node --test tests/package/

step "React and AI SDK apps in Chromium: the real react, ai and @ai-sdk/react bundled by esbuild; useDurableSession and useChat + DurableChatTransport in StrictMode; tsc --strict on the pages, an app event type and the examples"
npx tsc -p tests/adoption/tsconfig.json
cargo build --quiet -p durable-session-server -p durable-session-agent
run node --test --test-concurrency=1 tests/adoption/

step "demo app end to end in Chromium with access control on (two tabs, network cuts, reload, stop, steer, multi-agent)"
bash scripts/build-demo.sh
cargo build --quiet -p durable-session-server -p durable-session-agent
run node --test --test-concurrency=1 tests/e2e/

step "failover in Chromium: one redis-server, nodes A and B, the agent on B; A SIGKILLed mid-answer, a tab on [A, B] moves to B by itself and equals the log, a tab on B saw the answer live (WebSocket and HTTP)"
# Needs the npm package (built above) and the debug server and agent.
[ -f sdk/pkg/durable_sessions.js ] || bash scripts/build-sdk.sh
cargo build --quiet -p durable-session-server -p durable-session-agent
run node --test --test-concurrency=1 tests/scale/

step "chaos: three pages through a proxy that cuts and black-holes connections, the server SIGKILLed and restarted, a reload (WebSocket and HTTP)"
# Needs the npm package (built above) and the debug server and agent.
[ -f sdk/pkg/durable_sessions.js ] || bash scripts/build-sdk.sh
cargo build --quiet -p durable-session-server -p durable-session-agent
run node --test --test-concurrency=1 tests/chaos/

step "npm run size (each entry point)"
node scripts/size.mjs

step "API reference (npm run docs: TypeDoc and rustdoc; a broken link fails)"
bash scripts/docs.sh

step "benchmarks, smoke mode (each benchmark once, tiny counts; numbers are not checked)"
node scripts/bench.mjs --smoke

# Sum what every runner reported (cargo and wasm-bindgen-test: "test result:
# ok. N passed; M failed"; vitest: "Tests  N passed"; node: "# pass N").
plain=$(sed -e 's/\x1b\[[0-9;]*m//g' "$log")
passed=$(printf '%s\n' "$plain" | awk '
  /^test result:/ { for (i = 1; i <= NF; i++) if ($i ~ /^passed/) s += $(i-1) }
  /^ *Tests / { for (i = 1; i <= NF; i++) if ($i == "passed") s += $(i-1) }
  /^# pass / { s += $3 }
  END { print s + 0 }')
failed=$(printf '%s\n' "$plain" | awk '
  /^test result:/ { for (i = 1; i <= NF; i++) if ($i ~ /^failed/) s += $(i-1) }
  /^# fail / { s += $3 }
  END { print s + 0 }')
step "summary"
echo "tests: ${passed} passed, ${failed} failed"
