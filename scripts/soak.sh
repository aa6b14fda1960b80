#!/usr/bin/env bash
# Run the soak (python -m soak): the agent against the simulator with faults
# injected at random from a seed.  Arguments go to it, e.g.
#   scripts/soak.sh --seed 7 --duration 1800 --json soak.json
# Exit status 1 when a safety property broke (docs/reliability.md).
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_debian_packages chromium chromium-driver xvfb
ensure_venv
set -x
exec .venv/bin/python -m soak "$@"
