"""S03: the container is stopped (SIGTERM, 10 s grace) while authenticated; a new
container starts for the same account.  The appliance runs on this machine as
the image runs it: image/entrypoint.sh, the init step, then the repository's
supervisord.conf with Xvfb, the simulator as the gateway and the agent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.agent import browser_guard
from tests.support.appliance import Appliance

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

GRACE = 10.0  # docker stop / podman stop


def _messages(box: Appliance) -> list[str]:
    """The gateway's request log (logs/gw.message.*.log), in order."""
    lines = []
    for path in sorted((box.sim.root / "logs").glob("gw.message.*.log")):
        lines += path.read_text().splitlines()
    return lines


@pytest.mark.timeout(300)
def test_s03_sigterm_logs_out_stops_everything_and_restart_is_clean(tmp_path):
    """S03: SIGTERM to the container's supervisord while authenticated: the agent
    logs the session out while the gateway still runs, every program stops
    within the 10 s grace, and the exit status is 0; nothing is left running or
    locked.  A new start with the same volumes finds no stale session: no
    interrupted login in the failure budget, a fresh gateway whose first answer
    is "no session", one clean login."""
    with Appliance(tmp_path) as box:
        box.wait_ready()
        assert box.sim.state()["authenticated"]
        code, took = box.stop()
        assert code == 0, box.log()[-4000:]
        assert took < GRACE, f"stopping took {took:.1f} s"
        assert box.processes() == []
        assert not (box.run_dir / "supervisor.sock").exists()
        display = box.env["DISPLAY"][1:]
        assert not Path(f"/tmp/.X{display}-lock").exists()
        messages = _messages(box)
        logout = [n for n, line in enumerate(messages) if "POST /v1/api/logout" in line]
        assert logout, "the gateway was never logged out"
        answer = [line for line in messages[logout[-1] :] if " <- " in line]
        assert answer and " <- 200 POST /v1/api/logout" in answer[0], answer[:1]
        first_log = box.log()

        box.start()  # the next container, same volumes
        box.wait_ready()
        state = box.sim.state()
        second_log = box.log()[len(first_log) :]

    assert "logged out (shutdown)" in first_log
    assert re.search(r"stopped \(SIGTERM\), exit code 0", first_log)
    for program in ("agent", "gateway", "xvfb"):
        assert f"stopped: {program} (exit status 0)" in first_log or (
            f"stopped: {program} (terminated by SIGTERM)" in first_log
        ), program
    assert state["login_attempts"] == 1 and state["login_successes"] == 1
    assert not state["competing"]
    budget = json.loads((tmp_path / "outputs" / "failure-budget.json").read_text())
    assert budget["spent"] == 0 and budget["pending"] is None
    assert all(entry["kind"] != "Interrupted" for entry in budget["history"])
    assert "CHECKING -> LOGGING_IN: NO_SESSION" in second_log
    assert "Interrupted" not in second_log and "stale" not in second_log.lower()
