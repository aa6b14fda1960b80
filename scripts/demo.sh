#!/usr/bin/env bash
# The whole appliance on this machine, in the foreground: Xvfb, the gateway
# simulator as the gateway (demo account) and the agent, under supervisord with
# the image's own supervisord.conf.  Installs what is missing first.
#
# Everything lives under IBEAM_DEMO_DIR (default .demo/).  Ports and display
# can be moved: IBEAM_GATEWAY_PORT (5000), IBEAM_HEALTH_SERVER_PORT (5001),
# GATEWAY_SIM_CONTROL_PORT (5099), DISPLAY (first free from :99).
# Ctrl-C stops everything (the agent logs the gateway out first).
set -Eeuo pipefail
# Only bash itself runs until the secrets are hidden (below): every program
# started before that would inherit them.
here="${BASH_SOURCE[0]%/*}"
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
cd "$here/.."
. scripts/lib.sh
# The image's entrypoint functions, so that the demo prepares exactly as the
# container does.
. image/entrypoint.sh

demo_dir="${IBEAM_DEMO_DIR:-.demo}"
[[ "$demo_dir" == /* ]] || demo_dir="$PWD/$demo_dir"
export IBEAM_RUN_DIR="$demo_dir/run"
# The simulator's demo account (gateway_sim/: user demo, password demo), unless
# given (as a variable or a _FILE twin).
if [ -z "${IBEAM_ACCOUNT_FILE:-}" ]; then
	export IBEAM_ACCOUNT="${IBEAM_ACCOUNT:-demo}"
fi
if [ -z "${IBEAM_PASSWORD_FILE:-}" ]; then
	export IBEAM_PASSWORD="${IBEAM_PASSWORD:-demo}"
fi
ibeam_check_secrets
ibeam_hide_secrets

# Return 0 when something already listens on 127.0.0.1:port.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Print the first X display from :99 up with neither a lock nor a socket.
free_display() {
	local n=99
	while [ -e "/tmp/.X${n}-lock" ] || [ -e "/tmp/.X11-unix/X${n}" ]; do
		n=$((n + 1))
	done
	printf ':%s\n' "$n"
}

ensure_debian_packages chromium chromium-driver xvfb
ensure_venv

export PATH="$PWD/.venv/bin:$PATH"
export IBEAM_GATEWAY_DIR="$demo_dir/clientportal.gw"
export IBEAM_INPUTS_DIR="${IBEAM_INPUTS_DIR:-$demo_dir/inputs}"
export IBEAM_OUTPUTS_DIR="${IBEAM_OUTPUTS_DIR:-$demo_dir/outputs}"
export IBEAM_GATEWAY_PORT="${IBEAM_GATEWAY_PORT:-5000}"
export IBEAM_HEALTH_SERVER_PORT="${IBEAM_HEALTH_SERVER_PORT:-5001}"
export GATEWAY_SIM_CONTROL_PORT="${GATEWAY_SIM_CONTROL_PORT:-5099}"
export DISPLAY="${IBEAM_DEMO_DISPLAY:-$(free_display)}"

for port in "$IBEAM_GATEWAY_PORT" "$IBEAM_HEALTH_SERVER_PORT" "$GATEWAY_SIM_CONTROL_PORT"; do
	if port_in_use "$port"; then
		die "port $port is in use: stop what holds it or move the demo, e.g. IBEAM_GATEWAY_PORT=5100 make demo"
	fi
done

if [ ! -f "$IBEAM_GATEWAY_DIR/bin/run.sh" ]; then
	log demo "installing the simulator into $IBEAM_GATEWAY_DIR"
	python -m gateway_sim install "$IBEAM_GATEWAY_DIR"
fi

ibeam_prepare_dirs
ibeam_init

conf="$PWD/supervisord.conf"
# The port the gateway really listens on: an inputs conf.yaml may set another.
gateway_port=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1])).get("listenPort", 5000))' \
	"$IBEAM_GATEWAY_DIR/root/conf.yaml")
cat >&2 <<INFO

  The appliance is starting (supervisord in the foreground; Ctrl-C stops it).
  In another terminal:
    # the gateway, once the agent has logged it in
    curl -k https://localhost:$gateway_port/v1/api/one/user
    # the agent's view, and the simulator's
    curl localhost:$IBEAM_HEALTH_SERVER_PORT/status
    curl localhost:$GATEWAY_SIM_CONTROL_PORT/sim/state
    # the programs
    IBEAM_RUN_DIR=$IBEAM_RUN_DIR DISPLAY=$DISPLAY IBEAM_GATEWAY_DIR=$IBEAM_GATEWAY_DIR \\
      .venv/bin/supervisorctl -c $conf status

INFO
exec supervisord -c "$conf"
