"""Open files, threads and memory of the agent stay flat over repeated cycles."""

from __future__ import annotations

import time

import psutil
import pytest

from gateway_sim.harness import SimGateway
from tests.support.agent import AgentProcess, browser_guard, kill_gateways
from tests.support.needs import require_binaries

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


def _usage(pid: int) -> tuple[int, int, int]:
    proc = psutil.Process(pid)
    return proc.num_fds(), proc.num_threads(), proc.memory_info().rss


def test_agent_resources_stay_flat_over_login_cycles(tmp_path):
    require_binaries("chromium", "chromedriver", "Xvfb")
    sim = SimGateway(tmp_path / "gw", faults={"auth_delay_ms": 200}).install().start()
    try:
        with AgentProcess(sim, tmp_path, env={"IBEAM_LOG_LEVEL": "INFO"}) as agent:
            agent.wait_ready(90)

            def cycle(n: int) -> None:
                for _ in range(n):
                    before = sim.state()["login_successes"]
                    sim.expire()
                    agent.wait_for(
                        lambda s, b=before: (
                            s["ready"] and sim.state()["login_successes"] > b
                        ),
                        90,
                        "a new login",
                    )
                    time.sleep(2)  # a few maintenance ticks in between

            cycle(1)  # warm up: imports, caches, first browser
            fds, threads, rss = _usage(agent.process.pid)
            cycle(2)
            fds2, threads2, rss2 = _usage(agent.process.pid)
            print(
                f"fds {fds}->{fds2} threads {threads}->{threads2} "
                f"rss {rss >> 20}->{rss2 >> 20} MiB"
            )
            assert fds2 <= fds + 2
            assert threads2 <= threads + 1
            assert rss2 < rss + 25 * 1024 * 1024
    finally:
        sim.stop()
        kill_gateways(sim.root)
