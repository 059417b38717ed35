#!/usr/bin/env bash
# Builds the Leptos demo app into target/demo: index.html, style.css and the
# app's Wasm and JS glue under /pkg. The server serves it with --static-dir.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
out=target/demo
# Cargo's output directory (honours CARGO_TARGET_DIR); the demo itself always lands in target/demo.
cargo_target=${CARGO_TARGET_DIR:-target}
echo "[demo] compiling the Leptos demo to wasm32 (profile wasm-release)"
cargo build -p durable-session-demo --lib --target wasm32-unknown-unknown --profile wasm-release --quiet
rm -rf "$out"
mkdir -p "$out/pkg"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir "$out/pkg" --out-name demo "$cargo_target/wasm32-unknown-unknown/wasm-release/durable_session_demo.wasm"
npx --no-install wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-reference-types \
  --enable-sign-ext --enable-mutable-globals --enable-multivalue --strip-debug --strip-producers \
  "$out/pkg/demo_bg.wasm" -o "$out/pkg/demo_bg.wasm"
cp index.html demo-app/style.css "$out/"
echo "[demo] $out ready"
