#!/usr/bin/env bash
# The test command: install what is missing, start the local stack, lint, type-check, run
# every test (unit + integration on the real services), stop what this run started.
# Fails loudly: any failing step exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
section() { printf '\n=== %s  [+%ss]\n' "$*" "$(( $(date +%s) - started ))"; }

section "bootstrap"
bash scripts/bootstrap.sh

section "lint and types"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

section "deployment artifacts (Dockerfile, Helm chart)"
bash .ci/lint-deploy.sh

section "local stack"
was_up=0
if .venv/bin/cdc-dev status >/dev/null 2>&1; then was_up=1; fi
if [ "$was_up" = 0 ]; then trap 'section "stack down"; .venv/bin/cdc-dev down || true' EXIT; fi
.venv/bin/cdc-dev up

section "tests"
.venv/bin/pytest "$@"
section "done"
