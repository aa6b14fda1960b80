"""Standalone gateway control with real processes: start once, stop the whole
group, and report a port held by someone else (S16) instead of looping."""

from __future__ import annotations

import os
import socket

import psutil
import pytest

from gateway_sim.harness import SimGateway
from ibeam_agents.errors import ConfigError, PortInUse
from ibeam_agents.gateway import StandaloneGateway
from ibeam_agents.settings import DEFAULT_PROCESS_MATCH
from tests.support.agent import (
    AgentProcess,
    browser_guard,
    gateway_processes,
    kill_gateways,
)

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


@pytest.fixture
def sim(tmp_path):
    gw = SimGateway(tmp_path / "gw").install()
    yield gw
    kill_gateways(gw.root)


def _control(sim, tmp_path) -> StandaloneGateway:
    return StandaloneGateway(
        sim.root,
        process_match=f"gateway_sim.dir={sim.root}",
        port=sim.port,
        startup_timeout=20,
        console_log=tmp_path / "console.log",
    )


def _group_members(group: int) -> list[int]:
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != "zombie" and os.getpgid(proc.pid) == group:
                members.append(proc.pid)
        except OSError:
            continue
    return members


@pytest.fixture
def sim_env(sim, monkeypatch):
    monkeypatch.setenv("GATEWAY_SIM_CONTROL_PORT", str(sim.control_port))
    monkeypatch.setenv("IBEAM_PASSWORD", "must-not-reach-the-gateway")
    return sim


def test_standalone_gateway_starts_once_and_stops_the_group(sim_env, tmp_path):
    gateway = _control(sim_env, tmp_path)
    assert not gateway.running()
    gateway.start()
    gateway.wait_ready()
    assert gateway.owned and gateway.running() and gateway.answering()
    pid = gateway.pid()
    assert gateway.memory_bytes() > 1_000_000
    assert "IBEAM_PASSWORD" not in psutil.Process(pid).environ()

    gateway.start()  # never a second gateway
    gateway.restart()
    gateway.wait_ready()
    assert len(gateway_processes(sim_env.root)) == 1
    assert gateway.pid() != pid

    pid = gateway.pid()
    group = os.getpgid(pid)
    gateway.stop()
    assert not gateway.running()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert _group_members(group) == []
    assert "running" in (tmp_path / "console.log").read_text()


def test_standalone_gateway_reports_the_port_holder(sim_env, tmp_path):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("0.0.0.0", sim_env.port))
    holder.listen()
    try:
        with pytest.raises(PortInUse) as info:
            _control(sim_env, tmp_path).start()
        assert f"pid {os.getpid()}" in str(info.value)
        assert gateway_processes(sim_env.root) == []
    finally:
        holder.close()


def test_standalone_gateway_without_run_sh_is_a_config_error(tmp_path):
    gateway = StandaloneGateway(tmp_path, process_match="nothing-matches-this", port=1)
    with pytest.raises(ConfigError, match="IBEAM_GATEWAY_DIR"):
        gateway.start()


def test_agent_reports_port_conflict_without_a_restart_loop(sim, tmp_path):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("0.0.0.0", sim.port))
    holder.listen()
    try:
        with AgentProcess(sim, tmp_path) as agent:
            status = agent.wait_state("MISCONFIGURED", timeout=30)
            assert f"pid {os.getpid()}" in status["alert"]
            assert gateway_processes(sim.root) == []
            assert agent.log().count("ALERT") == 1
    finally:
        holder.close()


def test_standalone_gateway_never_takes_another_directorys_gateway(sim_env, tmp_path):
    # With the default match (the gateway's class name), another gateway on the
    # machine matches too; only the one running in IBEAM_GATEWAY_DIR is ours.
    other = SimGateway(tmp_path / "other").install().start()
    try:
        gw = StandaloneGateway(
            sim_env.root,
            process_match=DEFAULT_PROCESS_MATCH,
            port=sim_env.port,
            startup_timeout=20,
            console_log=tmp_path / "console.log",
        )
        assert not gw.running()
        gw.stop()  # nothing of ours runs: the other gateway is left alone
        assert other.running()
        gw.start()
        gw.wait_ready()
        ours = {proc.pid for proc in gw.processes()}
        assert ours and other.pid not in ours
        gw.stop()
        assert not gw.running()
        assert other.running() and other.state()["listening"]
    finally:
        other.stop()
        kill_gateways(other.root)
