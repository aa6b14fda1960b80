#!/usr/bin/env bash
# Entrypoint of the appliance image.
#
# With the default command (supervisord) it prepares the container, runs the
# init step (conf.yaml, certificates) and then hands over to supervisord, which
# runs the display, the gateway and the agent.  Any other command runs as is,
# e.g. `docker run --rm -it IMAGE bash`.
#
# The file can be sourced to test single functions: nothing runs unless it is
# executed directly.
set -Eeo pipefail

# Secrets the agent reads; each may come as NAME or as NAME_FILE, never both.
IBEAM_SECRETS=(IBEAM_ACCOUNT IBEAM_PASSWORD IBEAM_KEY IBEAM_TOTP_SECRET IBEAM_PYOTP_SECRET
	IBEAM_KEYSTORE_PASSWORD)

# Print one log line with time and tag: ibeam_log TAG message...
ibeam_log() {
	local tag=$1
	shift
	printf '%s [%s] [%s] entrypoint: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$$" "$tag" "$*"
}

# Print an error on stderr and stop: ibeam_fail message...
ibeam_fail() {
	ibeam_log ERROR "$@" >&2
	exit 2
}

# Fill in the settings supervisord.conf expands, with the image's defaults.
ibeam_defaults() {
	export IBEAM_RUN_DIR="${IBEAM_RUN_DIR:-/run/ibeam}"
	export IBEAM_GATEWAY_DIR="${IBEAM_GATEWAY_DIR:-/srv/clientportal.gw}"
	export IBEAM_INPUTS_DIR="${IBEAM_INPUTS_DIR:-/srv/inputs}"
	export DISPLAY="${DISPLAY:-:99}"
}

# Refuse a secret given both directly and as a file, naming the variable.
ibeam_check_secrets() {
	local name file_name
	for name in "${IBEAM_SECRETS[@]}"; do
		file_name="${name}_FILE"
		if [ -n "${!name:-}" ] && [ -n "${!file_name:-}" ]; then
			ibeam_fail "$name and $file_name are both set: keep one of them"
		fi
		if [ -n "${!file_name:-}" ] && [ ! -r "${!file_name}" ]; then
			ibeam_fail "$file_name=${!file_name} is not a readable file: mount the secret there"
		fi
	done
}

# Remove the lock and socket of a display whose Xvfb is gone (a restarted
# container keeps /tmp), so that Xvfb can start on it again.
ibeam_clear_display_lock() {
	local number="${DISPLAY#:}"
	number="${number%%.*}"
	local lock="/tmp/.X${number}-lock" pid
	[ -e "$lock" ] || return 0
	pid="$(tr -d ' \n' <"$lock" 2>/dev/null || true)"
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		ibeam_fail "display $DISPLAY is in use by pid $pid: set DISPLAY to a free display"
	fi
	ibeam_log INFO "removing stale lock of display $DISPLAY (pid ${pid:-unknown} is gone)"
	rm -f "$lock" "/tmp/.X11-unix/X${number}"
}

# Create the directories supervisord and the agent write to.
ibeam_prepare_dirs() {
	mkdir -p "$IBEAM_RUN_DIR"
	chmod 0700 "$IBEAM_RUN_DIR"
	if [ -n "${IBEAM_OUTPUTS_DIR:-}" ]; then
		mkdir -p "$IBEAM_OUTPUTS_DIR"
	fi
}

# Render conf.yaml and install certificates; pass what the agent needs on.
ibeam_init() {
	local agent_env="$IBEAM_RUN_DIR/agent.env"
	python -m ibeam_agents init --agent-env "$agent_env"
	# shellcheck source=/dev/null
	. "$agent_env"
	unset IBEAM_KEYSTORE_PASSWORD IBEAM_KEYSTORE_PASSWORD_FILE
}

_is_supervisord() {
	[ "$(basename -- "${1:-}")" = supervisord ]
}

_main() {
	if _is_supervisord "${1:-}"; then
		ibeam_defaults
		ibeam_check_secrets
		ibeam_prepare_dirs
		ibeam_clear_display_lock
		ibeam_log INFO "init step: gateway $IBEAM_GATEWAY_DIR, inputs $IBEAM_INPUTS_DIR"
		ibeam_init
		ibeam_log INFO "starting supervisord (display $DISPLAY, socket $IBEAM_RUN_DIR/supervisor.sock)"
	fi
	exec "$@"
}

# Run only when executed, not when sourced (tests source it to call functions).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	_main "$@"
fi
