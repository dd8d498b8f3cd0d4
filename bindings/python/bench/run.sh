#!/usr/bin/env bash
# The Python benchmark: installs lupa into the package's test venv (built by
# bindings/python/scripts/test.sh, or made here) and runs bench.py. Args go to bench.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="${MOONJAIL_PY_VENV:-$root/target/py-venv}"
if ! "$venv/bin/python" -c "import moonjail" 2>/dev/null; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "$root/bindings/python"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "lupa>=2.8,<3"
cd "$root/bindings/python/bench"
exec "$venv/bin/python" bench.py "$@"
