#!/usr/bin/env bash
# Fuzzes a running `sandflow serve` against its own OpenAPI document with schemathesis
# (from PyPI): whatever a client sends, the server must never answer 5xx, and every answer
# must be one its document describes. EXAMPLES (default 50) test cases per operation.
# Not checked: that the server refuses everything its document forbids. It is more lenient
# in one place: integers are documented in OpenAPI's int64 range, and the server takes the
# whole u64 range.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-50}"

# Installed once per machine, outside the checkout, under its version's name.
version=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/sandflow/schemathesis-$version"
if [[ ! -x $venv/bin/schemathesis ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$version"
fi
cargo build --quiet -p sandflow-cli
bin="${CARGO_TARGET_DIR:-target}/debug/sandflow"

work=$(mktemp -d)
server=
cleanup() {
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
token=$("$bin" tenant add fuzz --db "$work/db.redb")
"$bin" serve --listen 127.0.0.1:0 --db "$work/db.redb" --no-cache >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 100); do
    [[ -s $work/out ]] && break
    sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/out")
[[ -n $url ]] || { cat "$work/err"; echo "sandflow serve did not start" >&2; exit 1; }

# One worker: CPython 3.11 before 3.11.8 keeps the ast module's recursion depth in shared
# state, so hypothesis parsing lambdas in two threads at once fails now and then with
# "AST constructor recursion depth mismatch" (CPython gh-106905), an error of the tool, not
# of the server.
"$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "$url/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --exclude-checks negative_data_rejection \
    --max-examples "$examples" \
    --seed 1 \
    --workers 1
# A panic would have been answered 500 above, but say so even if it was not.
if grep -q "panicked" "$work/err"; then
    cat "$work/err"
    exit 1
fi
