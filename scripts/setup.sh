#!/usr/bin/env bash
# Installs what the project needs on this machine, and nothing that is
# already there: npm packages from the committed lock file, the wasm32 Rust
# target, the pinned wasm-bindgen CLI, and Debian's chromium, chromium-driver,
# binaryen (wasm-opt) and redis-server (the shared store the tests run on).
# Safe to run again; quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

# Must equal the `wasm-bindgen` crate version pinned in sdk/Cargo.toml.
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = { version = "=\([0-9.]*\)".*/\1/p' sdk/Cargo.toml)

if ! command -v cargo >/dev/null 2>&1; then
  echo "[setup] cargo is missing: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi

# npm packages, exactly as locked. Re-installed when the lock file changes.
stamp=node_modules/.setup-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  say "installing npm packages from package-lock.json"
  # Not `npm ci`: the registry here lacks some other platforms' optional
  # binaries (e.g. msgpackr-extract for macOS), which `npm ci` insists on
  # finding in the lock. --no-save installs the locked versions, unchanged.
  npm install --no-audit --no-fund --no-save --loglevel=error
  cp package-lock.json "$stamp"
else
  say "npm packages are up to date"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown Rust target"
  rustup target add wasm32-unknown-unknown
fi

# Debian packages: Chromium and its driver for browser tests, binaryen for
# wasm-opt, redis-server for the Redis store's tests (they start their own
# redis-server in a temp dir; the package's system service is not used).
missing=()
for pkg in chromium chromium-driver binaryen redis-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

installed=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$installed" != "$WASM_BINDGEN_VERSION" ]; then
  say "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (about 3 minutes, once)"
  # --locked keeps the CLI's own lock file; if a crate it locks is no longer
  # on the registry, resolve afresh (same CLI version either way).
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked --quiet \
    || cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --quiet
fi
