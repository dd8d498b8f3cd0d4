#!/usr/bin/env bash
# Fuzzes the HTTP service from its own OpenAPI document with schemathesis (installed into
# target/openapi-fuzz-venv the first time): a `moonjail serve` on loopback with a real
# key, every route, generated requests valid and invalid. It fails on any 5xx, any
# status, content type, header or body the document does not declare.
#
#   bash scripts/openapi_fuzz.sh                  # uses target/debug/moonjail (cargo build first)
#   MOONJAIL=target/release/moonjail EXAMPLES=200 bash scripts/openapi_fuzz.sh
#
# Request-side strictness (whether the server refuses everything the document would
# refuse, and accepts everything it allows) is not checked: a request may ask for limits
# only up to this server's own maxima, which no static document can state.
set -euo pipefail
cd "$(dirname "$0")/.."
moonjail=${MOONJAIL:-target/debug/moonjail}
examples=${EXAMPLES:-50}
venv=target/openapi-fuzz-venv
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi
work=$(mktemp -d)
server=
cleanup() {
    [[ -n "$server" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
key=$("$moonjail" keys add fuzz --keys "$work/keys" | grep -o 'mj_[A-Za-z0-9_-]*' | head -1)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# With a deferred tool, so runs go through the suspending path and the routes of
# suspended runs (/v1/runs/{id}/...) are served.
"$moonjail" serve --listen "127.0.0.1:$port" --keys "$work/keys" --timeout 1s \
    --memory 16MiB --defer-tool approve > "$work/serve.log" 2>&1 &
server=$!
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
    --wait-for-schema 30 \
    --header "Authorization: Bearer $key" \
    --max-examples "$examples" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --no-color
