#!/usr/bin/env bash
# The Python package's suite, from nothing but a Rust toolchain and python3: makes a
# virtual environment (target/py-venv, or $MOONJAIL_PY_VENV), installs pytest and mypy,
# installs the package the way the README says (pip install ./bindings/python, which
# builds the extension and the isolated worker in release mode), then runs pytest, which
# also checks the type stubs against the module (mypy's stubtest) and a typed sample.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
venv="${MOONJAIL_PY_VENV:-$root/target/py-venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r bindings/python/requirements-test.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --force-reinstall --no-deps ./bindings/python
# From outside the source tree, so that `import moonjail` is the installed package.
cd "$root/bindings/python/tests"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
