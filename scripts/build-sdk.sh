#!/usr/bin/env bash
# Builds the npm package into sdk/pkg: the Wasm (size-tuned profile), the
# wasm-bindgen JS glue and TypeScript types, wasm-opt, package.json, and the
# entry points written in TypeScript (durable-sessions/react, /ai-sdk).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
out=sdk/pkg
# Cargo's output directory (honours CARGO_TARGET_DIR, e.g. a private one on a shared machine).
cargo_target=${CARGO_TARGET_DIR:-target}
echo "[build] compiling the SDK to wasm32 (profile wasm-release)"
cargo build -p durable-sessions --lib --target wasm32-unknown-unknown --profile wasm-release --features js --quiet
echo "[build] generating JS glue and TypeScript types"
rm -rf "$out"
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir "$out" --out-name durable_sessions \
  "$cargo_target/wasm32-unknown-unknown/wasm-release/durable_sessions.wasm"
echo "[build] wasm-opt -Oz (binaryen from npm, pinned in package.json)"
npx --no-install wasm-opt -Oz --converge --enable-bulk-memory --enable-nontrapping-float-to-int --enable-reference-types \
  --enable-sign-ext --enable-mutable-globals --enable-multivalue --strip-debug --strip-producers \
  "$out/durable_sessions_bg.wasm" -o "$out/durable_sessions_bg.wasm"
echo "[build] minifying the JS glue (terser; types stay in the .d.ts)"
npx --no-install terser "$out/durable_sessions.js" --module --compress --mangle -o "$out/durable_sessions.js"
node scripts/finish-pkg.mjs
echo "[build] compiling the React and AI SDK entry points (sdk/npm/src, TypeScript)"
npx --no-install tsc -p sdk/npm/tsconfig.json
for entry in react ai-sdk; do
  npx --no-install terser "$out/$entry.js" --module --compress --mangle -o "$out/$entry.js"
done
echo "[build] $out ready: $(ls "$out" | tr '\n' ' ')"
