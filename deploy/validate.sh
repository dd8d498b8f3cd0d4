#!/usr/bin/env bash
# Validates deploy/k8s/*.yaml against the Kubernetes API schemas, strictly (unknown
# fields are errors), with kubernetes-validate from PyPI, which carries the schemas (no
# cluster, no network at validation time). Installs it into a virtual environment under
# target/ the first time. First proves the validator can fail, on a manifest broken on
# purpose, so a validator that passes everything is caught too.
#
#   bash deploy/validate.sh            # the manifests of this repository
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/deploy-venv
version=1.37.0
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version"
fi
validate=("$venv/bin/kubernetes-validate" --strict --kubernetes-version "${version%.*}.0")

broken=$(mktemp --suffix=.yaml)
trap 'rm -f "$broken"' EXIT
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\nspec:\n  replicas: "two"\n' > "$broken"
if "${validate[@]}" --quiet "$broken" > /dev/null 2>&1; then
    echo "deploy/validate.sh: the validator accepted a broken manifest" >&2
    exit 1
fi
"${validate[@]}" deploy/k8s/*.yaml
