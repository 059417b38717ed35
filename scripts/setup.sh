#!/usr/bin/env bash
# Installs what the project needs on this machine, and nothing that is
# already there: npm packages from the committed lock file (and, as later
# parts of the project need them, rustup targets, Debian packages and pinned
# cargo tools). Safe to run again; quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "[setup] cargo is missing: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi

# npm packages, exactly as locked. Re-installed when the lock file changes.
stamp=node_modules/.setup-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  say "installing npm packages from package-lock.json"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
else
  say "npm packages are up to date"
fi
