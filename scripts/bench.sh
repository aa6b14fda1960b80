#!/usr/bin/env bash
# Run the benchmarks in bench/ (against the simulator); arguments go to them.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv
[ -f bench/__main__.py ] || die "no benchmark entry point yet (bench/__main__.py)"
set -x
exec .venv/bin/python -m bench "$@"
