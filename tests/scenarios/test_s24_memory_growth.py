"""S24: the gateway's memory grows until it dies (the kernel's OOM killer in the
field, the simulator's `memory_limit_mb` here); the agent runs through many such
cycles."""

from __future__ import annotations

import psutil
import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    metric,
    running_sim,
)

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

LIMIT_MB = 160
GROWTH = {"memory_growth_mb_per_min": 900, "memory_limit_mb": LIMIT_MB}
MEMORY_RESTARTS = 'ibeam_gateway_restarts_total{reason="memory"}'
OOM = "killed as the kernel's OOM killer would"
CYCLES = 3


def _usage(pid: int) -> tuple[int, int, int]:
    proc = psutil.Process(pid)
    return proc.num_fds(), proc.num_threads(), proc.memory_info().rss


def _grow_until_restarted(sim, agent, done: int) -> None:
    """Let the ready gateway grow (15 MiB/s) until the agent restarts it."""
    agent.wait_ready(90)
    assert sim.state()["resident_mb"] < 0.6 * LIMIT_MB
    sim.faults(**GROWTH)
    agent.wait_for(
        lambda s: metric(agent, MEMORY_RESTARTS) == done + 1, 30, "a memory restart"
    )


def test_s24_gateway_restarted_before_its_memory_limit_agent_stays_flat(tmp_path):
    """S24: with IBEAM_GATEWAY_MEMORY_LIMIT_MB the agent restarts a growing
    gateway at a maintenance check while it is idle (READY, never during a
    login), before the limit kills it; cycle after cycle, each restart followed
    by one login; over the run the agent's own open files, threads and memory
    stay flat."""
    env = {"IBEAM_GATEWAY_MEMORY_LIMIT_MB": str(LIMIT_MB), "IBEAM_LOG_LEVEL": "INFO"}
    with running_sim(tmp_path) as sim:
        with AgentProcess(sim, tmp_path, env=env) as agent:
            _grow_until_restarted(sim, agent, 0)  # warm up: imports, caches
            agent.wait_ready(90)
            before = _usage(agent.process.pid)
            for done in range(1, CYCLES):
                _grow_until_restarted(sim, agent, done)
            agent.wait_ready(90)
            after = _usage(agent.process.pid)
            logins = metric(agent, 'ibeam_logins_total{outcome="succeeded"}')
            memory = metric(agent, "ibeam_gateway_memory_bytes")
            log = agent.log()
        console = (
            sim.console() + (tmp_path / "outputs" / "gateway-console.log").read_text()
        )

    print(f"agent fds, threads, rss: {before} -> {after}")
    assert logins == CYCLES + 1
    assert OOM not in console  # the limit was never reached
    assert 0 < memory < LIMIT_MB * 1024 * 1024
    restarts = [line for line in log.splitlines() if "-> RESTARTING" in line]
    assert len(restarts) == CYCLES
    for line in restarts:
        assert "READY -> RESTARTING: planned memory restart" in line
        assert f"of its {LIMIT_MB} MiB limit" in line
    fds, threads, rss = before
    assert after[0] <= fds + 2
    assert after[1] <= threads + 1
    assert after[2] < rss + 20 * 1024 * 1024
