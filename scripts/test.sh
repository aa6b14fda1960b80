#!/usr/bin/env bash
# Run the whole test suite: unit, e2e, scenarios, image, soak and bench smoke.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv
if [ "$#" -eq 0 ]; then
	set -- tests
fi
set -x
exec .venv/bin/python -m pytest "$@"
