"""S12: a password full of shell-hostile characters, from env files and secret files.

The simulator accepts only `P$w"d#1\\a&b|c'z` and records a SHA-256 of every
password it receives.  The agent gets the password the way a container does:
from an env file read with docker's rules (tests/support/envfile.py), written
bare, single-quoted and double-quoted, and from a secret file.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway_sim.harness import SimGateway
from tests.support.agent import AgentProcess, browser_guard, kill_gateways
from tests.support.envfile import parse_env_file
from tests.support.needs import require, require_binaries

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

HOSTILE = "P$w\"d#1\\a&b|c'z"
USER = "hostileuser"
FORMS = {
    "bare": HOSTILE,
    "single-quoted": f"'{HOSTILE}'",
    "double-quoted": f'"{HOSTILE}"',
}
QUOTE_WARNING = "IBEAM_PASSWORD starts and ends with a quote"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture
def sim(tmp_path):
    require_binaries("chromium", "chromedriver", "Xvfb")
    account = {"user": USER, "password": HOSTILE, "account_id": "U7654321"}
    gw = SimGateway(tmp_path / "gw", accounts=[account], faults={"auth_delay_ms": 300})
    gw.install().start()
    yield gw
    gw.stop()
    kill_gateways(gw.root)


def write_env_file(path: Path, form: str) -> Path:
    """An env file as an operator writes it, with a comment and a blank line."""
    path.write_text(
        "# credentials for the appliance\n"
        f"IBEAM_ACCOUNT={USER}\n"
        "\n"
        f"IBEAM_PASSWORD={FORMS[form]}\n",
        encoding="utf-8",
    )
    return path


def agent_for(sim, workdir: Path, variables: dict[str, str], **env) -> AgentProcess:
    agent = AgentProcess(sim, workdir, env=env, account=USER)
    agent.env.pop("IBEAM_PASSWORD")
    agent.env.update(variables)
    return agent


def assert_nowhere(agent: AgentProcess, sim: SimGateway) -> None:
    """No form of the password in the log, the outputs or the gateway's config."""
    texts = {"agent log": agent.log().encode()}
    for path in sorted(agent.outputs.rglob("*")):
        if path.is_file():
            texts[str(path)] = path.read_bytes()
    texts["conf.yaml"] = (sim.root / "root" / "conf.yaml").read_bytes()
    for name, data in texts.items():
        for form, value in FORMS.items():
            assert value.encode() not in data, f"{form} password in {name}"


def test_s12_env_file_reader_matches_the_container_engine(tmp_path):
    """S12: the test's env-file reader gives what podman puts in a container."""
    engine = shutil.which("podman") or shutil.which("docker")
    require(engine is not None, "no container engine (podman or docker)")
    image = "debian:bookworm-slim"
    present = subprocess.run(
        [engine, "image", "inspect", image], capture_output=True, timeout=60
    )
    require(present.returncode == 0, f"base image {image} is not present")
    env_file = tmp_path / "env.list"
    env_file.write_text(
        "".join(f"FORM_{n}={value}\n" for n, value in enumerate(FORMS.values()))
        + "  # indented comment\n"
        + "PADDED=  two spaces  \n"
    )
    run = subprocess.run(
        [
            engine,
            "run",
            "--rm",
            "--pull=never",
            "--env-file",
            str(env_file),
            image,
            "env",
            "-0",
        ],
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    inside = dict(
        item.split("=", 1)
        for item in run.stdout.decode().split("\0")
        if item.startswith(("FORM_", "PADDED"))
    )
    assert inside == parse_env_file(env_file, lookup={})


def test_s12_bare_env_file_and_secret_file_are_typed_byte_exact(sim, tmp_path):
    """S12: bare in an env file, and as a secret file: the hash matches, no warning."""
    variables = parse_env_file(write_env_file(tmp_path / "env.list", "bare"))
    assert variables["IBEAM_PASSWORD"] == HOSTILE
    with agent_for(sim, tmp_path / "bare", variables) as agent:
        agent.wait_ready(90)
        assert sim.state()["password_sha256"] == [sha256(HOSTILE)]
        assert agent.terminate()[0] == 0
    assert QUOTE_WARNING not in agent.log()
    assert_nowhere(agent, sim)

    sim.reset()  # logout keeps the SSO session; the next agent must log in again
    secret = tmp_path / "secrets" / "ibeam_password"
    secret.parent.mkdir()
    secret.write_text(HOSTILE + "\n", encoding="utf-8")
    secret.chmod(0o600)
    variables = {"IBEAM_ACCOUNT": USER, "IBEAM_PASSWORD_FILE": str(secret)}
    with agent_for(sim, tmp_path / "file", variables) as agent:
        agent.wait_ready(90)
        assert sim.state()["password_sha256"] == [sha256(HOSTILE)]
        assert agent.terminate()[0] == 0
    assert "quote" not in agent.log()
    assert_nowhere(agent, sim)


@pytest.mark.parametrize("form", ["single-quoted", "double-quoted"])
def test_s12_quoted_env_file_value_warns_and_is_typed_as_given(sim, tmp_path, form):
    """S12: quotes in an env file are part of the value: typed as such, with a warning.

    The warning names the variable, never the value; the refused login spends
    the (one-attempt) budget and the agent stops there.
    """
    variables = parse_env_file(write_env_file(tmp_path / "env.list", form))
    assert variables["IBEAM_PASSWORD"] == FORMS[form]
    env = {"IBEAM_MAX_FAILED_AUTH": "1"}
    with agent_for(sim, tmp_path / form, variables, **env) as agent:
        halted = agent.wait_state("HALTED", timeout=90)
        assert halted["failures"]["budget"]["spent"] == 1
        state = sim.state()
        assert state["password_sha256"] == [sha256(FORMS[form])]
        assert state["login_successes"] == 0 and not state["locked"]
        assert agent.terminate()[0] == 0
    warnings = [line for line in agent.log().splitlines() if QUOTE_WARNING in line]
    assert len(warnings) == 1 and "[WARNING]" in warnings[0]
    assert_nowhere(agent, sim)
