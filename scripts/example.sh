#!/usr/bin/env bash
# Builds the engine and the etl example bundle, runs the workflow into a database of its own
# (target/example.redb), prints the report the workflow produced, and the commands to look
# further. Extra arguments go to `sandflow run` (e.g. --concurrency 1).
#
# Works from any directory and whatever ran before: every path is the repository's, and
# the plugin is built with an explicit --target, since cargo reads the configuration of
# the directory it is started in, not the one of the manifest it is given.
#
# The engine is built as the tests build it: the dev profile (its dependencies optimised),
# every target of the workspace, so that dev-dependencies resolve features alike (without
# the test targets, memchr, fnv and regex-syntax resolve other features, and wasmtime and
# cranelift would be compiled a second time). `./scripts/test.sh` after it then only runs.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
# `target` unless CARGO_TARGET_DIR says otherwise (as CI's does).
target="${CARGO_TARGET_DIR:-target}"
cargo build --workspace --all-targets --target-dir "$target"
cargo build --release -p etl --manifest-path plugins/Cargo.toml \
    --target wasm32-wasip2 --target-dir plugins/target

sandflow=$target/debug/sandflow
bundle=plugins/target/wasm32-wasip2/release/etl.wasm
db=target/example.redb

"$sandflow" inspect "$bundle"
echo
table=$("$sandflow" run "$bundle" --db "$db" "$@")
printf '%s\n\n' "$table"
run=$(printf '%s\n' "$table" | sed -n '1s/^run \([0-9][0-9]*\) .*/\1/p')
"$sandflow" output "$run" report --db "$db"
cat <<EOF

Run $run is stored in $db. To look further, from the repository root:
  $sandflow runs show $run --logs --db $db   # every attempt, with each task's log
  $sandflow output $run summary --db $db     # one task's output (JSON)
  $sandflow runs --db $db                    # every run in this database
  $sandflow inspect $bundle --format dot | dot -Tsvg > etl.svg   # the DAG (Graphviz)
EOF
