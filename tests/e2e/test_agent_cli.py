"""The `ibeam` command line as a real process: IBeam's flags, the subcommands,
and the one-line errors with exit code 2 for bad configuration."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway_sim.harness import SimGateway
from tests.support.agent import (
    REPO,
    AgentProcess,
    browser_guard,
    gateway_processes,
    kill_gateways,
)
from tests.support.needs import require_binaries

pytestmark = pytest.mark.e2e

no_browser_left = pytest.fixture(autouse=True)(browser_guard)


@pytest.fixture
def sim(tmp_path):
    gw = SimGateway(tmp_path / "gw", faults={"auth_delay_ms": 300}).install()
    yield gw
    kill_gateways(gw.root)


@pytest.fixture
def env(sim, tmp_path):
    # AgentProcess only to build the same environment the other tests use.
    values = dict(AgentProcess(sim, tmp_path).env)
    values["IBEAM_LOG_LEVEL"] = "WARNING"  # stdout carries the commands' answers
    return values


def ibeam(env, *args, stdin: str | None = None, timeout: float = 90):
    return subprocess.run(
        [sys.executable, "-m", "ibeam_agents", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_bad_setting_is_one_line_and_exit_2(sim, env):
    env["IBEAM_MAINTENANCE_INTERVAL"] = "soon"
    done = ibeam(env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ConfigError: IBEAM_MAINTENANCE_INTERVAL must be a number of seconds "
        "greater than 0: got 'soon'"
    ]
    assert gateway_processes(sim.root) == []


def test_cli_missing_password_without_terminal_exits_2(sim, env):
    del env["IBEAM_PASSWORD"]
    done = ibeam(env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "MissingCredentialError: IBEAM_PASSWORD"
    )
    assert gateway_processes(sim.root) == []


def test_cli_original_flags_against_the_simulator(sim, env):
    require_binaries("chromium", "chromedriver", "Xvfb")
    encrypted = ibeam(env, "encrypt-password", stdin="demo\n")
    assert encrypted.returncode == 0
    values = dict(line.split("=", 1) for line in encrypted.stdout.split())
    assert set(values) == {"IBEAM_PASSWORD", "IBEAM_KEY"}
    assert "demo" not in values["IBEAM_PASSWORD"]
    env.update(values)

    started = ibeam(env, "-s")
    assert started.returncode == 0 and "gateway answers" in started.stdout
    assert len(gateway_processes(sim.root)) == 1

    tickled = ibeam(env, "-t")
    assert tickled.returncode == 0 and tickled.stdout.startswith("NO_SESSION")
    assert ibeam(env, "-c").returncode == 1

    authenticated = ibeam(env, "-a")
    assert authenticated.returncode == 0, authenticated.stdout + authenticated.stderr
    assert "authenticated" in authenticated.stdout
    assert sim.state()["authenticated"]
    assert len(gateway_processes(sim.root)) == 1

    checked = ibeam(env, "-c")
    assert checked.returncode == 0 and checked.stdout.startswith("AUTHENTICATED")
    user = ibeam(env, "-u")
    assert user.returncode == 0 and isinstance(json.loads(user.stdout), dict)
    validated = ibeam(env, "-l")
    assert validated.returncode == 0 and "valid" in validated.stdout

    killed = ibeam(env, "-k")
    assert killed.returncode == 0
    assert gateway_processes(sim.root) == []
    assert ibeam(env, "-t").returncode == 1


def test_cli_status_subcommand_reads_the_running_agent(sim, tmp_path):
    require_binaries("chromium", "chromedriver", "Xvfb")
    with AgentProcess(sim, tmp_path) as agent:
        agent.wait_ready(90)
        done = ibeam(agent.env, "status")
        assert done.returncode == 0
        assert json.loads(done.stdout)["state"] == "READY"
    done = ibeam(agent.env, "status")
    assert done.returncode == 1 and "no agent answers" in done.stderr


def test_cli_help_lists_flags_and_commands(env):
    done = ibeam(env, "--help")
    assert done.returncode == 0
    for word in (
        "--authenticate",
        "--kill",
        "--maintain",
        "--start",
        "--tickle",
        "--user",
        "--validate",
        "--verbose",
        "encrypt-password",
        "reset-failures",
        "status",
        "init",
    ):
        assert word in done.stdout


def test_cli_init_dispatches_to_the_init_step(env, tmp_path):
    env["IBEAM_GATEWAY_DIR"] = str(tmp_path / "not-a-gateway")
    done = ibeam(env, "init")
    assert done.returncode == 2
    assert "IBEAM_GATEWAY_DIR" in done.stderr
