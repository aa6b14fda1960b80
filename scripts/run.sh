#!/usr/bin/env bash
# Run a built image in the foreground: run.sh IMAGE
# Reads credentials from env.list (docker env-file rules: NAME=value, taken
# literally), mounts ./inputs if present, keeps outputs in a named volume.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

image=${1:?usage: run.sh IMAGE}
env_file=${ENV_FILE:-env.list}
[ -f "$env_file" ] || die "$env_file not found: create it with IBEAM_ACCOUNT=... and IBEAM_PASSWORD=... lines (see README)"
engine=$(container_engine)
args=(run --rm --env-file "$env_file"
	-p 127.0.0.1:5000:5000 -p 127.0.0.1:5001:5001
	-v ibeam-outputs:/srv/outputs)
if [ -d inputs ]; then
	args+=(-v "$PWD/inputs:/srv/inputs:ro")
fi
log run "$engine ${args[*]} $image"
exec "$engine" "${args[@]}" "$image"
