#!/usr/bin/env bash
# Builds the API reference from the sources into target/api:
#   target/api/js/     the npm package (TypeDoc): durable-sessions,
#                      durable-sessions/react, durable-sessions/ai-sdk
#   target/api/rust/   the crates (rustdoc): durable_sessions (core, web,
#                      leptos, native) and durable_session_protocol
#   target/api/index.html links both.
# Warnings (a broken link, a missing type) are errors.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -f sdk/pkg/durable_sessions.d.ts ] && [ -f sdk/pkg/react.js ] || bash scripts/build-sdk.sh
out=target/api
rm -rf "$out"
echo "[docs] JavaScript/TypeScript reference (TypeDoc)"
npx --no-install typedoc --options typedoc.json --logLevel Warn
echo "[docs] Rust reference (rustdoc)"
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps -p durable-sessions -p durable-session-protocol --features durable-sessions/native,durable-sessions/web,durable-sessions/leptos
mkdir -p "$out/rust"
cp -r "${CARGO_TARGET_DIR:-target}/doc/." "$out/rust/"
cat > "$out/index.html" <<'HTML'
<!doctype html>
<meta charset="utf-8">
<title>durable-sessions API reference</title>
<h1>durable-sessions API reference</h1>
<ul>
  <li><a href="js/index.html">JavaScript / TypeScript</a>: the npm package — <code>durable-sessions</code>, <code>durable-sessions/react</code>, <code>durable-sessions/ai-sdk</code></li>
  <li><a href="rust/durable_sessions/index.html">Rust</a>: the <code>durable-sessions</code> crate (core, browser transports, Leptos hooks, native transport) and <a href="rust/durable_session_protocol/index.html"><code>durable-session-protocol</code></a></li>
</ul>
HTML
echo "[docs] $out/index.html"
