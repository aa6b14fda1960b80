# Shared shell functions of the scripts behind the Makefile; source it.
# Functions: log, die, ensure_debian_packages, ensure_python_build, ensure_venv,
# container_engine.

# Print one log line with time and a tag: log TAG message...
log() {
	local tag=$1
	shift
	printf '%s [%s] %s\n' "$(date '+%H:%M:%S')" "$tag" "$*" >&2
}

# Print an error and stop: die message...
die() {
	log error "$@"
	exit 1
}

# Install the Debian packages that are missing (as root), or say how to.
ensure_debian_packages() {
	local missing=() pkg
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$pkg")
	done
	[ "${#missing[@]}" -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		die "missing Debian packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}"
	fi
	log deps "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
}

# Make sure python3 can create a virtual environment and build a C extension
# (pyjks needs twofish, published as source only).
ensure_python_build() {
	python3 -c 'import ensurepip' 2>/dev/null || ensure_debian_packages python3-venv
	command -v gcc >/dev/null 2>&1 || ensure_debian_packages gcc libc6-dev
	python3 -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
		ensure_debian_packages python3-dev
}

# Create .venv and install the project (with test extras) when it is not there.
ensure_venv() {
	local venv="${IBEAM_VENV:-$PWD/.venv}"
	if [ -x "$venv/bin/python" ] &&
		"$venv/bin/python" -c 'import ibeam_agents, gateway_sim, pytest' 2>/dev/null; then
		return 0
	fi
	ensure_python_build
	if [ ! -x "$venv/bin/python" ]; then
		log deps "creating $venv"
		python3 -m venv "$venv"
	fi
	log deps "installing the project into $venv"
	"$venv/bin/pip" install --quiet --disable-pip-version-check -e '.[test]'
}

# Name the container engine: docker when its daemon answers, else podman.
container_engine() {
	if [ -n "${ENGINE:-}" ]; then
		printf '%s\n' "$ENGINE"
	elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
		printf 'docker\n'
	elif command -v podman >/dev/null 2>&1; then
		printf 'podman\n'
	else
		die "no container engine: install docker or podman (see .ci/run)"
	fi
}
