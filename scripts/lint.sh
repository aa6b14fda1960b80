#!/usr/bin/env bash
# Lint: ruff (checks and formatting) on the Python code, bash -n on the scripts.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv
set -x
.venv/bin/ruff check .
.venv/bin/ruff format --check .
{ set +x; } 2>/dev/null
for script in scripts/*.sh image/entrypoint.sh .ci/run; do
	bash -n "$script" || die "$script: syntax error"
done
log lint "shell syntax ok"
