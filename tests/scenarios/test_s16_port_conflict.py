"""S16: another process already listens on the gateway port; separately, the
operator's conf.yaml moves the gateway to a port of its own (`listenPort: 5055`
in the field; a free port here, the point being that it is not the default)."""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    gateway_processes,
    running_sim,
)
from tests.support.appliance import Appliance
from tests.support.ports import free_port

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

WATCH = 5.0  # seconds (five intervals) in which nothing may loop


@contextmanager
def held_port(port: int):
    """A plain listening socket in this test process, as another program would."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("0.0.0.0", port))
    holder.listen()
    try:
        yield holder
    finally:
        holder.close()


def _changes(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if "ibeam_agents.watcher:" in line and " -> " in line
    ]


def test_s16_standalone_port_holder_reported_and_no_loop(tmp_path):
    """S16 standalone: the agent names the process holding the gateway's port
    (its pid) in one alert, starts no gateway and does not loop; once the port
    is free it starts the gateway and logs in, at the URL it derived from the
    gateway's own conf.yaml (a non-default listenPort)."""
    with running_sim(tmp_path) as sim:
        sim.stop()  # installed and configured; the agent is to start it
        assert sim.port != 5000
        with held_port(sim.port) as holder, AgentProcess(sim, tmp_path) as agent:
            status = agent.wait_state("MISCONFIGURED", timeout=30)
            assert f"port {sim.port} is" in status["alert"]
            assert f"pid {os.getpid()}" in status["alert"]
            changes = len(_changes(agent.log()))
            time.sleep(WATCH)
            assert gateway_processes(sim.root) == []
            assert len(_changes(agent.log())) == changes
            assert agent.get("/readyz")[0] == 503

            holder.close()  # the other program goes away
            status = agent.wait_ready(90)
            log = agent.log()

    assert status["gateway"] == f"https://localhost:{sim.port}"
    assert status["alert"] is None
    assert log.count("ALERT") == 1


@pytest.mark.timeout(300)
def test_s16_appliance_port_holder_then_custom_listen_port(tmp_path):
    """S16 under supervisord: the operator's conf.yaml (inputs dir) sets a
    non-default listenPort, which another program holds.  The init step says it
    uses that conf.yaml; the gateway program cannot bind and stays up serving
    nothing; the agent names the holder's pid, restarts nothing and does not
    loop.  Once the port is free the agent restarts the gateway once and logs
    in at the URL derived from the conf.yaml actually used."""
    port = free_port()
    box = Appliance(tmp_path, env={"IBEAM_GATEWAY_STARTUP": "4"})
    (box.inputs / "conf.yaml").write_text(
        f"listenPort: {port}\nips:\n  allow: [127.0.0.1]\n  deny: []\n"
    )
    with held_port(port) as holder, box:
        status = box.wait_state("MISCONFIGURED", timeout=60)
        assert f"port {port} is held by pid {os.getpid()}" in status["alert"]
        gateway = box.supervisorctl("pid", "gateway").stdout.strip()
        changes = len(_changes(box.log()))
        time.sleep(WATCH)
        assert box.supervisorctl("pid", "gateway").stdout.strip() == gateway
        assert len(_changes(box.log())) == changes
        assert box.sim.state()["login_attempts"] == 0

        holder.close()
        ready = box.wait_ready(120)
        log = box.log()

    assert ready["gateway"] == f"https://localhost:{port}"
    assert f"conf.yaml from {box.inputs / 'conf.yaml'}" in log
    assert "IBEAM_GATEWAY_PORT is ignored" in log
    assert "Address already in use" in log
    assert log.count("ALERT: port") == 1
    assert len([line for line in _changes(log) if "-> RESTARTING" in line]) == 1
