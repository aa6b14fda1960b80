#!/usr/bin/env bash
# Build the appliance image: build.sh ibkr|sim TAG [extra build arguments...]
#   ibkr  the gateway from IBKR's zip (needs the internet; GATEWAY_URL,
#         GATEWAY_SHA256 build arguments)
#   sim   the gateway simulator; everything else is the same image
set -Eeuo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

target=${1:?usage: build.sh ibkr|sim TAG}
tag=${2:?usage: build.sh ibkr|sim TAG}
shift 2
engine=$(container_engine)
args=(build --target "$target" --tag "$tag")

# pip inside the build verifies the package index with the host's CA bundle
# (needed where the index sits behind a TLS-intercepting proxy).
ca=${IBEAM_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$ca" ]; then
	args+=(--secret "id=pipca,src=$ca")
fi
if [ "$engine" = podman ]; then
	# docker format keeps HEALTHCHECK; never pull a base image that is here.
	args+=(--format docker)
	if podman image exists docker.io/library/debian:bookworm-slim; then
		args+=(--pull=never)
	fi
fi
log build "$engine ${args[*]} $* ."
exec "$engine" "${args[@]}" "$@" .
