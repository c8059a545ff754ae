#!/usr/bin/env bash
# Runs every test: unit tests beside the code, and the end-to-end tests in tests/, which
# build the plugins in plugins/ for wasm32-wasip2 first. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo test --workspace "$@"
# The example plugin's own tests, native (sandflow_sdk::testing): on the host's target, not
# the wasm32-wasip2 that plugins/ builds for by default.
host=$(rustc -vV | sed -n 's/^host: //p')
(cd plugins && cargo test -p etl --target "$host")
# Every benchmark once, at a tiny size: they must keep building and running.
cargo test --workspace --benches "$@"
