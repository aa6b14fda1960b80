"""Gateway control through a real supervisord over its unix socket."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gateway_sim.harness import SimGateway
from ibeam_agents.errors import ConfigError, SupervisorError
from ibeam_agents.gateway import SupervisorGateway
from tests.support.agent import (
    AgentProcess,
    browser_guard,
    kill_gateways,
    session_leftovers,
)
from tests.support.needs import require_binaries

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

SUPERVISORD = Path(sys.executable).with_name("supervisord")

CONFIG = """\
[unix_http_server]
file={run}/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
logfile={run}/supervisord.log
pidfile={run}/supervisord.pid
childlogdir={run}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:gateway]
command=bash bin/run.sh root/conf.yaml
directory={gateway}
environment=GATEWAY_SIM_CONTROL_PORT="{control}",GATEWAY_SIM_FAULTS='{faults}',GATEWAY_SIM_STARTUP_DELAY_MS="{startup_delay_ms}"
autostart=true
autorestart=true
startsecs=1
stopasgroup=true
killasgroup=true
stopwaitsecs=5
stdout_logfile={run}/gateway.log
redirect_stderr=true
"""


@pytest.fixture
def supervised(tmp_path):
    """(sim, socket URL): a supervisord whose `gateway` program is the simulator."""
    yield from _supervised(tmp_path)


@pytest.fixture
def supervised_slow_start(tmp_path):
    """The same, with a gateway that takes 3 s to listen, as the JVM does."""
    yield from _supervised(tmp_path, startup_delay_ms=3000)


def _supervised(tmp_path, startup_delay_ms=0):
    require_binaries("chromium", "chromedriver", "Xvfb")
    sim = SimGateway(tmp_path / "gw", faults={"auth_delay_ms": 300}).install()
    run = Path(tempfile.mkdtemp(prefix="ibeam-sv-"))  # short: unix socket paths
    conf = run / "supervisord.conf"
    conf.write_text(
        CONFIG.format(
            run=run,
            gateway=sim.root,
            control=sim.control_port,
            faults=json.dumps(sim.initial_faults),
            startup_delay_ms=startup_delay_ms,
        )
    )
    proc = subprocess.Popen(
        [str(SUPERVISORD), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"unix://{run}/supervisor.sock"
    try:
        gateway = SupervisorGateway(url, "gateway", port=sim.port, startup_timeout=20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if gateway.state() == "RUNNING" and gateway.answering():
                    break
            except SupervisorError:
                pass
            time.sleep(0.1)
        yield sim, url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        kill_gateways(sim.root)
        shutil.rmtree(run, ignore_errors=True)


def test_supervisor_gateway_starts_stops_and_restarts(supervised):
    sim, url = supervised
    gateway = SupervisorGateway(url, "gateway", port=sim.port)
    assert gateway.state() == "RUNNING" and gateway.running()
    first = gateway.pid()
    assert first and gateway.memory_bytes() > 1_000_000

    gateway.restart()
    gateway.wait_ready()
    assert gateway.pid() not in (None, first)

    gateway.stop()
    assert gateway.state() == "STOPPED" and not gateway.running()
    assert gateway.pid() is None
    gateway.stop()  # stopping a stopped program is not an error

    gateway.start()
    gateway.start()  # nor is starting a started one
    gateway.wait_ready()
    assert gateway.running()


def test_supervisor_gateway_errors_name_the_setting(supervised):
    sim, url = supervised
    with pytest.raises(ConfigError, match="IBEAM_SUPERVISOR_PROGRAM"):
        SupervisorGateway(url, "nosuch", port=sim.port).state()
    with pytest.raises(SupervisorError, match="IBEAM_SUPERVISOR_URL"):
        SupervisorGateway("unix:///nonexistent/s.sock", port=sim.port).state()


def test_agent_under_supervisord_restarts_gateway_after_the_grace(supervised, tmp_path):
    sim, url = supervised
    gateway = SupervisorGateway(url, "gateway", port=sim.port)
    env = {"IBEAM_SUPERVISOR_URL": url, "IBEAM_TRANSIENT_GRACE": "2"}
    with AgentProcess(sim, tmp_path, env=env) as agent:
        agent.wait_ready(90)
        first = gateway.pid()
        sim.faults(error_status=503, error_for_s=600, error_scope="api")
        agent.wait_for(lambda s: s["degraded"], 20, "degraded")
        agent.wait_for(lambda s: s["ready"] and gateway.pid() != first, 90, "restart")
        metrics = agent.get("/metrics")[1].decode()
        assert 'ibeam_gateway_restarts_total{reason="transient"} 1.0' in metrics

        pid = gateway.pid()
        logouts = sim.state()["logouts"]
        code, took = agent.terminate()
        assert code == 0 and took < 10
        assert sim.state()["logouts"] == logouts + 1
        assert gateway.state() == "RUNNING" and gateway.pid() == pid  # supervisord's
        assert session_leftovers(agent.process.pid) == []


def test_agent_logs_in_again_soon_after_supervisord_restarts_a_crashed_gateway(
    supervised_slow_start, tmp_path
):
    """A crash: supervisord restarts the program at once; the agent, which saw
    the port refused while a gateway process ran, tries again every
    IBEAM_STATUS_INTERVAL, not only at the next maintenance check (5 minutes
    here), and logs the new gateway in."""
    sim, url = supervised_slow_start
    gateway = SupervisorGateway(url, "gateway", port=sim.port)
    env = {
        "IBEAM_SUPERVISOR_URL": url,
        "IBEAM_MAINTENANCE_INTERVAL": "300",
        "IBEAM_STATUS_INTERVAL": "1",
    }
    with AgentProcess(sim, tmp_path, env=env) as agent:
        agent.wait_ready(90)
        first = gateway.pid()
        sim.crash()
        agent.wait_for(lambda s: not s["ready"], 20, "the crash noticed")
        agent.wait_for(lambda s: s["ready"] and gateway.pid() != first, 120, "ready")
        assert sim.state()["login_successes"] == 1  # counted by the new process
        code, _ = agent.terminate()
        assert code == 0
        assert session_leftovers(agent.process.pid) == []
