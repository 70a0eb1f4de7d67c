#!/usr/bin/env bash
#
# setup-python.sh — create the Python environment the end-to-end tests run in.
#
# Usage:
#   scripts/setup-python.sh
#
# Creates <repo>/.venv (python3 -m venv) if it is missing and installs the pinned packages below:
# the official Dapr Python SDK with its grpc and fastapi extras (the real client the e2e tests drive hangard with, and
# the app-side servers dapr.ext.grpc.App and dapr.ext.fastapi.DaprApp that hangard calls into), pytest, and the two
# checkers of the Kubernetes manifests (Tests/e2e/test_deploy_kubernetes.py): kubernetes-validate (the
# Kubernetes JSON schemas) and yamllint.
# Nothing else is needed: the tests talk HTTP with the standard library (http.client), also over
# Unix sockets. Idempotent: when .venv already holds exactly these pins it returns at once.
# Runnable from any working directory. Environment overrides:
#   PYTHON   interpreter used to create the venv (default: python3)

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

# Pinned: the SDK version the reference (shared/reference/dapr-api.md) was written against.
REQUIREMENTS=(
    "dapr[grpc,fastapi]==1.19.0"
    "pytest==9.2.0"
    "kubernetes-validate==1.34.0"
    "yamllint==1.38.0"
)
IMPORTS="import dapr.clients, dapr.ext.grpc, dapr.ext.fastapi, pytest, kubernetes_validate, yamllint"

log() { echo "setup-python: $*" >&2; }

STAMP="$VENV/.hangar-requirements"
WANTED="$(printf '%s\n' "${REQUIREMENTS[@]}")"

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANTED" ] \
    && "$VENV/bin/python" -c "$IMPORTS" >/dev/null 2>&1; then
    log "$VENV is up to date"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

log "installing ${REQUIREMENTS[*]}"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "${REQUIREMENTS[@]}"
"$VENV/bin/python" -c "$IMPORTS"
printf '%s\n' "$WANTED" >"$STAMP"
log "done"
