"""One agent per outputs dir: a second maintaining `ibeam` on the same outputs dir
(and so the same failure budget and gateway) is refused before it starts
anything, naming the first one's pid; it never logs the first one's session out."""

from __future__ import annotations

import pytest

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    gateway_processes,
    running_sim,
)

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


def test_agent_lock_refuses_a_second_agent_on_the_same_outputs_dir(tmp_path):
    with running_sim(tmp_path) as sim:
        with AgentProcess(sim, tmp_path) as first:
            first.wait_ready(90)
            state = sim.state()
            gateways = {proc.pid for proc in gateway_processes(sim.root)}
            # another health port, as the health port's own error suggests
            second = AgentProcess(sim, tmp_path, args=("-m",))
            assert second.health_port != first.health_port
            with second:
                assert second.process.wait(60) == 2
            lines = second.log().strip().splitlines()
            assert lines == [
                f"ConfigError: another agent (pid {first.process.pid}) already runs "
                f"with the outputs dir {first.outputs} (it holds agent.lock): stop "
                "it first; one agent keeps a gateway, and agents of different "
                "gateways need an IBEAM_OUTPUTS_DIR each"
            ]
            assert (first.outputs / "agent.lock").read_text() == (
                f"{first.process.pid}\n"
            )
            # nothing of the first agent's was touched
            assert {proc.pid for proc in gateway_processes(sim.root)} == gateways
            now = sim.state()
            assert now["logouts"] == state["logouts"]
            assert first.status()["state"] == "READY"
            assert sim.request("GET", "/v1/api/one/user").status_code == 200
            assert first.terminate()[0] == 0

        # the lock goes with its holder: the next agent on the dir starts
        with AgentProcess(sim, tmp_path) as third:
            third.wait_ready(90)
            assert (third.outputs / "agent.lock").read_text() == (
                f"{third.process.pid}\n"
            )
