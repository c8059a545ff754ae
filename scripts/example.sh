#!/usr/bin/env bash
# Builds the etl example bundle for wasm32-wasip2 and runs it with sandflow, then prints the
# report the workflow produced. Extra arguments go to `sandflow run` (e.g. --concurrency 1).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --manifest-path plugins/Cargo.toml -p etl
cargo build --release -p sandflow

sandflow=target/release/sandflow
bundle=plugins/target/wasm32-wasip2/release/etl.wasm
"$sandflow" inspect "$bundle"
echo
report=$("$sandflow" run "$bundle" --json "$@")
run=$(printf '%s' "$report" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
"$sandflow" runs show "$run"
echo
"$sandflow" output "$run" report
