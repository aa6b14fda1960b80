"""S15: a stale X lock and socket for the agent's display, standalone (the agent's
own Xvfb through pyvirtualdisplay) and in the appliance (the entrypoint clears
the lock before supervisord's xvfb program starts Xvfb)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ibeam_agents.browser import display_answers
from tests.scenarios.login_scenarios import agent_for, scenario_sim, wait_until
from tests.support.agent import browser_guard
from tests.support.needs import require_binaries

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

ENTRYPOINT = Path(__file__).resolve().parents[2] / "image" / "entrypoint.sh"
X_SOCKETS = Path("/tmp/.X11-unix")


def _free_display(start: int = 150) -> int:
    for number in range(start, start + 200):
        lock, sock = Path(f"/tmp/.X{number}-lock"), X_SOCKETS / f"X{number}"
        if not lock.exists() and not sock.exists():
            return number
    raise AssertionError("no free X display number")


@contextlib.contextmanager
def stale_display(number: int, owner: str) -> Iterator[Path]:
    """A lock for :number held by a dead (or a live non-X) pid, and a dead socket."""
    lock, sock = Path(f"/tmp/.X{number}-lock"), X_SOCKETS / f"X{number}"
    holder = subprocess.Popen(["sleep", "300"])
    if owner == "dead":
        holder.kill()
        holder.wait()
    X_SOCKETS.mkdir(mode=0o1777, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))  # closed without unlinking: a socket nobody serves
    listener.close()
    lock.write_text(f"{holder.pid:>10}\n")
    try:
        yield lock
    finally:
        holder.kill()
        holder.wait()
        if lock.exists() and lock.read_text().strip() == str(holder.pid):
            lock.unlink()
        if sock.exists() and not display_answers(f":{number}"):
            sock.unlink()


@pytest.mark.parametrize(
    ("which", "owner"),
    [("configured", "dead"), ("configured", "reused"), ("default", "dead")],
)
def test_s15_agent_clears_stale_lock_before_its_own_xvfb(tmp_path, which, owner):
    """S15: the agent's display (IBEAM_DISPLAY, or the first free number when it
    starts Xvfb itself) has a lock whose pid is dead, or alive but no X server,
    and a socket nobody serves.  The agent checks the display before the browser
    starts, sees it does not answer, removes the stale lock and socket, starts
    its own Xvfb and logs in; nothing of its Xvfb is left afterwards."""
    number = _free_display(400 if which == "configured" else 0)
    env = {"IBEAM_DISPLAY": f":{number}"} if which == "configured" else {}
    with stale_display(number, owner) as lock, scenario_sim(tmp_path) as sim:
        pid_text = lock.read_text().strip()
        with agent_for(sim, tmp_path, "liveuser", **env) as agent:
            agent.wait_ready(90)
            log = agent.log()
        sock = X_SOCKETS / f"X{number}"
        # Cleared by this agent, or (on a shared machine) by another process
        # first; either way its own Xvfb came up and the stale pair is gone.
        chosen = re.findall(r"started Xvfb on :(\d+)", log)
        assert chosen, log[-3000:]
        cleared = f"cleared stale X lock {lock}" in log
        assert cleared or int(chosen[0]) != number
        assert not (lock.exists() and lock.read_text().strip() == pid_text)
        assert not (sock.exists() and not display_answers(f":{number}"))
        assert sim.state()["login_successes"] == 1
    if which == "configured":
        assert f"X display :{number} does not answer; starting Xvfb instead" in log


def _entrypoint(function: str, display: str) -> subprocess.CompletedProcess:
    """Source image/entrypoint.sh and run one of its functions."""
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "DISPLAY": display}
    return subprocess.run(
        ["bash", "-c", f'. "{ENTRYPOINT}"\n{function}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_s15_appliance_clears_stale_lock_and_agent_uses_its_display(tmp_path):
    """S15, appliance: the entrypoint removes a stale lock (dead pid) and socket
    of $DISPLAY before supervisord starts the xvfb program, so Xvfb starts on
    that display; the agent checks that the display answers before the browser
    starts and logs in on it without an Xvfb of its own."""
    require_binaries("Xvfb")
    number = _free_display(600)
    with stale_display(number, "dead") as lock:
        done = _entrypoint("ibeam_clear_display_lock", f":{number}")
        assert done.returncode == 0, done.stderr
        assert f"removing stale lock of display :{number}" in done.stdout
        assert not lock.exists() and not (X_SOCKETS / f"X{number}").exists()

        # What supervisord's [program:xvfb] runs.
        xvfb = subprocess.Popen(
            ["Xvfb", f":{number}", "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: display_answers(f":{number}"), 20, "Xvfb to answer")
            with scenario_sim(tmp_path) as sim:
                env = {"IBEAM_DISPLAY": f":{number}"}
                with agent_for(sim, tmp_path, "liveuser", **env) as agent:
                    agent.wait_ready(90)
                    log = agent.log()
                assert sim.state()["login_successes"] == 1
            assert xvfb.poll() is None, "the agent must leave the display it uses"
        finally:
            xvfb.terminate()
            xvfb.wait(10)
    assert "starting Xvfb instead" not in log and "started Xvfb" not in log


def test_s15_appliance_clears_lock_whose_pid_is_no_x_server():
    """S15, appliance: after a container restart the pid in /tmp/.X99-lock may
    belong to another process.  The entrypoint sees it is no X server and that
    nothing answers on the display's socket, and removes lock and socket, since
    Xvfb would otherwise refuse the display and the xvfb program would go
    FATAL; Xvfb then starts on that display."""
    require_binaries("Xvfb")
    number = _free_display(600)
    with stale_display(number, "reused") as lock:
        done = _entrypoint("ibeam_clear_display_lock", f":{number}")
        assert done.returncode == 0, done.stderr
        assert "no X server" in done.stdout
        assert not lock.exists() and not (X_SOCKETS / f"X{number}").exists()
        xvfb = subprocess.Popen(
            ["Xvfb", f":{number}", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: display_answers(f":{number}"), 20, "Xvfb to answer")
        finally:
            xvfb.terminate()
            xvfb.wait(10)
