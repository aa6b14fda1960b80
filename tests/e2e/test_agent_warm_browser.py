"""The warm browser: started while the gateway boots, pinned from the keystore on
disk, taken by the first login; with real Chromium, Xvfb and the simulator."""

from __future__ import annotations

import time
from contextlib import contextmanager

import psutil
import pytest

from gateway_sim.harness import SimGateway
from gateway_sim.tls import write_default_keystore
from ibeam_agents import browser
from ibeam_agents.credentials import Credentials
from ibeam_agents.gateway import port_answers
from ibeam_agents.login import perform_login
from tests.support import procs
from tests.support.agent import AgentProcess, kill_gateways, session_leftovers
from tests.support.needs import require_binaries
from tests.unit.ibeam_agents.test_login import options

pytestmark = pytest.mark.e2e

USING = "using the warm browser"
STALE = "warm browser: not used (its pinned certificate is not the one the gateway"
# Long enough for the agent to read the keystore and the test to replace it
# before the simulator (started by the agent) loads it and listens.
SLOW_BOOT_MS = 8000


@pytest.fixture
def sim(tmp_path):
    """An installed simulator directory that the agent itself starts."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    gw = SimGateway(tmp_path / "gw", faults={"auth_delay_ms": 300}).install()
    yield gw
    kill_gateways(gw.root)


def _browsers_of(pid: int) -> list[str]:
    """Browser, driver and display processes under pid (not zombies)."""
    children = psutil.Process(pid).children(recursive=True)
    return [f"{child.pid} {child.name()}" for child in children if _is_browser(child)]


def _new_browsers(snap: procs.Snapshot) -> list[psutil.Process]:
    """Browser, driver and display processes this test process started."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if child.pid not in snap.pids and _is_browser(child)
    ]


def _is_browser(process: psutil.Process) -> bool:
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.name().lower().startswith(("chrom", "xvfb"))
    except psutil.Error:
        return False


def _wait_in_log(agent: AgentProcess, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in agent.log():
        assert agent.alive(), agent.log()[-3000:]
        assert time.monotonic() < deadline, f"no {needle!r} in\n{agent.log()[-3000:]}"
        time.sleep(0.05)


def test_agent_cold_start_logs_in_with_the_warm_browser(sim, tmp_path):
    with procs.tracking() as snap, AgentProcess(sim, tmp_path) as agent:
        agent.wait_ready(90)
        log = agent.log()
        assert "warm browser: starting while the gateway starts" in log
        assert log.count(USING) == 1, log[-3000:]
        assert sim.state()["login_successes"] == 1
        # The login closed what the warm start had started, display included.
        assert _browsers_of(agent.process.pid) == []
        assert procs.leftovers(snap) == []

        session = agent.process.pid
        code, _ = agent.terminate()
        assert code == 0, agent.log()[-3000:]
        assert session_leftovers(session) == []
    procs.assert_none_left(snap)


def test_agent_warm_browser_with_a_stale_pin_gives_way(sim, tmp_path):
    env = {"GATEWAY_SIM_STARTUP_DELAY_MS": str(SLOW_BOOT_MS)}
    with procs.tracking() as snap, AgentProcess(sim, tmp_path, env=env) as agent:
        _wait_in_log(agent, "warm browser: starting", 30)
        # The agent pinned the keystore on disk; the gateway, still booting,
        # will load another one.
        assert not port_answers("127.0.0.1", sim.port), "the simulator booted early"
        write_default_keystore(str(sim.root / "root" / "vertx.jks"))

        agent.wait_ready(90)
        log = agent.log()
        assert STALE in log, log[-3000:]
        assert USING not in log
        assert sim.state()["login_successes"] == 1
        assert _browsers_of(agent.process.pid) == []

        code, _ = agent.terminate()
        assert code == 0, agent.log()[-3000:]
    procs.assert_none_left(snap)


@contextmanager
def _warm_browser_first(tmp_path, caplog):
    """(sim, login options, process snapshot): a warm browser started, pinned
    from the keystore on disk, before the simulator (not started yet) listens.
    Afterwards the warm browser is closed, the simulator stopped, and no
    browser, driver or display process is left."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    caplog.set_level("INFO", logger="ibeam_agents")
    sim = SimGateway(tmp_path / "gw", faults={"auth_delay_ms": 300}).install()
    opts = options(base_url=sim.base_url, outputs_dir=tmp_path / "out")
    with procs.tracking() as snap:
        try:
            pin = browser.keystore_spki_hash(sim.root, sim.base_url)
            assert browser.preflight_browser(opts, warm=True, spki=pin)
            yield sim, opts, snap
            assert pin == browser.gateway_spki_hash(sim.base_url)
        finally:
            browser.close_warm_browser()
            sim.stop()
        assert _new_browsers(snap) == []
    procs.assert_none_left(snap)


def test_login_after_the_warm_browser_was_killed_starts_fresh(tmp_path, caplog):
    """The watcher kills browsers by name when it abandons a login (restart,
    shutdown): a warm browser dying that way must not break the next login."""
    with _warm_browser_first(tmp_path, caplog) as (sim, opts, snap):
        assert browser._SLOT.warm.done.wait(60)
        sim.start()
        # As the watcher's _kill_browsers does, by name: here only the
        # processes this test started, not the session's other displays.
        killed = _new_browsers(snap)
        assert killed
        procs.kill(killed)
        perform_login(opts, Credentials("demo", "demo"), None)
        assert "warm browser: not used" in caplog.text
        assert USING not in caplog.text
        assert sim.state()["login_successes"] == 1


def test_login_takes_the_warm_browser_pinned_from_disk(tmp_path, caplog):
    with _warm_browser_first(tmp_path, caplog) as (sim, opts, _):
        sim.start()
        result = perform_login(opts, Credentials("demo", "demo"), None)
        assert result.page_variant == "current"
        assert USING in caplog.text
        assert browser._SLOT.warm is None
