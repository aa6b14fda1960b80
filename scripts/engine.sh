#!/usr/bin/env bash
# Print the container engine to use: docker where a daemon answers, else podman.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
container_engine
