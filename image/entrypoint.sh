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

# Secrets the agent (and, for the keystore, the init step) reads; each may come
# as NAME or as NAME_FILE, never both.  The same list as
# ibeam_agents.credentials.SECRET_VARIABLES (a unit test keeps them equal).
IBEAM_SECRETS=(IBEAM_ACCOUNT IBEAM_PASSWORD IBEAM_KEY IBEAM_TOTP_SECRET IBEAM_PYOTP_SECRET
	IBEAM_EXTERNAL_REQUEST_URL IBEAM_EXTERNAL_REQUEST_HEADERS IBEAM_KEYSTORE_PASSWORD)

# Print one log line with time and tag: ibeam_log TAG message...
ibeam_log() {
	local tag=$1
	shift
	# printf's own clock: no program starts while secrets may still be exported
	printf '%(%Y-%m-%d %H:%M:%S)T [%s] [%s] entrypoint: %s\n' -1 "$$" "$tag" "$*"
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

# Names an X server's process has in /proc/<pid>/comm (as ibeam_agents.browser).
IBEAM_X_SERVERS=(Xvfb Xorg X Xvnc Xephyr Xwayland Xtigervnc)

# Print the name of a live process, or nothing when the pid is gone or a zombie.
_process_name() {
	local pid=$1 stat
	[[ "$pid" =~ ^[0-9]+$ ]] || return 0
	stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 0
	# field 3 (after the name in parentheses) is the state; Z: exited, unreaped
	[[ "${stat##*) }" == Z* ]] && return 0
	cat "/proc/$pid/comm" 2>/dev/null || true
}

# Succeed when something accepts a connection on the display's socket.
_display_socket_answers() {
	local sock=$1 python
	[ -S "$sock" ] || return 1
	python="$(command -v python3 || command -v python)" || return 1
	"$python" -c '
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(3)
    s.connect(sys.argv[1])
' "$sock" 2>/dev/null
}

# Remove the lock and socket of a display no X server holds, so that Xvfb can
# start on it.  A restarted container keeps /tmp but not its processes: the pid
# in the lock is then gone, or (pids count up from 1 again) another process.
ibeam_clear_display_lock() {
	local number="${DISPLAY#:}"
	number="${number%%.*}"
	local lock="/tmp/.X${number}-lock" sock="/tmp/.X11-unix/X${number}" pid name
	[ -e "$lock" ] || return 0
	pid="$(tr -d ' \n' <"$lock" 2>/dev/null || true)"
	name="$(_process_name "$pid")"
	if [ -n "$name" ] && [[ " ${IBEAM_X_SERVERS[*]} " == *" $name "* ]]; then
		ibeam_fail "display $DISPLAY is in use by X server $name (pid $pid): set DISPLAY to a free display"
	fi
	if _display_socket_answers "$sock"; then
		ibeam_fail "display $DISPLAY is in use (its socket $sock answers): set DISPLAY to a free display"
	fi
	if [ -n "$name" ]; then
		ibeam_log INFO "removing stale lock of display $DISPLAY (pid $pid is $name, no X server)"
	else
		ibeam_log INFO "removing stale lock of display $DISPLAY (pid ${pid:-unknown} is gone)"
	fi
	rm -f "$lock" "$sock"
}

# Create the directories supervisord and the agent write to.
ibeam_prepare_dirs() {
	mkdir -p "$IBEAM_RUN_DIR"
	chmod 0700 "$IBEAM_RUN_DIR"
	if [ -n "${IBEAM_OUTPUTS_DIR:-}" ]; then
		mkdir -p "$IBEAM_OUTPUTS_DIR"
	fi
}

# Move each secret given as a variable into an owner-only file and leave only
# its _FILE twin (a path) in the environment.  supervisord hands its whole
# environment to every program (xvfb, gateway, the event listener), yet only the
# agent reads the secrets, from these files.  With IBEAM_SECRETS_SOURCE=fs the
# account, password and key variables already hold paths and stay as they are.
# Every secret is unset before the first command runs, so that no program,
# however short-lived, inherits one.
ibeam_hide_secrets() {
	local dir="$IBEAM_RUN_DIR/secrets" name from="${IBEAM_SECRETS_SOURCE:-env}"
	local -A values=()
	from="${from//[[:space:]]/}"
	for name in "${IBEAM_SECRETS[@]}"; do
		if [ "${from,,}" = fs ] && [[ "$name" =~ ^IBEAM_(ACCOUNT|PASSWORD|KEY)$ ]]; then
			continue
		fi
		if [ -n "${!name:-}" ]; then
			values[$name]="${!name}"
		fi
		unset "$name"
	done
	rm -rf -- "$dir"
	(umask 077 && mkdir -p -- "$dir")
	for name in "${!values[@]}"; do
		(umask 077 && printf '%s' "${values[$name]}" >"$dir/$name")
		export "${name}_FILE=$dir/$name"
	done
}

# Render conf.yaml and install certificates, after checking the agent's
# settings and credentials too (a bad one ends here with status 2, not as a
# FATAL agent once supervisord runs); pass what the agent needs on.
ibeam_init() {
	local agent_env="$IBEAM_RUN_DIR/agent.env"
	python -m ibeam_agents init --check-agent --agent-env "$agent_env"
	# shellcheck source=/dev/null
	. "$agent_env"
	# only the init step opens the keystore
	rm -f -- "$IBEAM_RUN_DIR/secrets/IBEAM_KEYSTORE_PASSWORD"
	unset IBEAM_KEYSTORE_PASSWORD IBEAM_KEYSTORE_PASSWORD_FILE
}

_is_supervisord() {
	[ "$(basename -- "${1:-}")" = supervisord ]
}

_main() {
	if _is_supervisord "${1:-}"; then
		ibeam_defaults
		ibeam_check_secrets
		ibeam_hide_secrets
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
