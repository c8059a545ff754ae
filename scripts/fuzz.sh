#!/usr/bin/env bash
# Fuzzes what an untrusted bundle controls, each target for SECONDS (default 60): the
# workflow `describe` returns (describe_results) and the bundle file's bytes
# (bundle_bytes). libFuzzer through cargo-fuzz, without a sanitizer, which works on stable
# Rust: sandflow's own code is safe Rust, and what is looked for is a panic, an abort or a
# hang. A crash leaves its input in fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# A real bundle to start from, so that mutations reach compilation and `describe`.
mkdir -p fuzz/corpus/describe_results fuzz/corpus/bundle_bytes
hello=plugins/target/wasm32-wasip2/release/hello.wasm
[[ -f "$hello" ]] && cp "$hello" fuzz/corpus/bundle_bytes/hello.wasm

# The instrumented build shares nothing with the workspace's (other flags, other profile)
# and takes minutes; it is kept outside the checkout, so that a later run, from any
# checkout, rebuilds only what changed. Cargo's fingerprints keep it correct.
target_dir="${SANDFLOW_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sandflow/fuzz-target}"

cd fuzz
for target in describe_results bundle_bytes; do
    cargo fuzz run --sanitizer none --target-dir "$target_dir" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1
done
