#!/usr/bin/env bash
# Client Portal Gateway simulator (gateway_sim), started the way IBKR's bin/run.sh
# starts the real gateway: from the gateway directory, as `bin/run.sh root/conf.yaml`.
# The configuration is found through the class path (its directory), so the
# script only works from the gateway directory, like the real one.

if [ $# -lt 1 ]; then
	echo "usage: $0 /path/to/conf.yaml" >&2
	exit 1
fi

config_file=$1
config_path=$(dirname "$config_file")
RUNTIME_PATH="$config_path:dist/ibgroup.web.core.iblink.router.clientportal.gw.jar:build/lib/runtime/*"

echo "running $verticle "
echo " runtime path : $RUNTIME_PATH"
echo " config file  : $config_file"
@PYTHONPATH@
# The Python interpreter that ran `gateway_sim install`, in place of java.
# -Dgateway_sim.dir is the simulator's own: a process-match string unique to
# this directory when several gateways run on one machine.
exec @PYTHON@ -m gateway_sim.server -server -Dgateway_sim.dir="$PWD" \
	-Dvertx.disableDnsResolver=true \
	-Djava.net.preferIPv4Stack=true \
	-Dvertx.logger-delegate-factory-class-name=io.vertx.core.logging.SLF4JLogDelegateFactory \
	-Dnologback.statusListenerClass=ch.qos.logback.core.status.OnConsoleStatusListener \
	-Dnolog4j.debug=true -Dnolog4j2.debug=true \
	-cp "${RUNTIME_PATH}" ibgroup.web.core.clientportal.gw.GatewayStart --conf "../$config_file"
