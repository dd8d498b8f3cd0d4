#!/usr/bin/env bash
# The test command: every suite of the project, from a fresh clone, installing what the
# suites need by the project's own scripts (nothing else to set up).
#   1. the Rust workspace (unit, integration, doc and CLI tests);
#   2. the Python package (bindings/python: builds and installs it into a virtual
#      environment, then pytest and the type-stub checks);
#   3. the Kubernetes manifests of deploy/, against the API schemas;
#   4. the HTTP service, fuzzed from its own OpenAPI document (no 5xx, nothing
#      undocumented), with the binary step 1 built.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
bash bindings/python/scripts/test.sh
bash deploy/validate.sh
cargo build -p moonjail-cli
bash scripts/openapi_fuzz.sh
