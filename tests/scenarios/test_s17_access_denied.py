"""S17: the gateway enforces `ips.allow`/`ips.deny` and answers 404 `Access
Denied` to anyone else; the operator's conf.yaml lacks 127.0.0.1, or was
dropped in a folder the appliance does not read."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.support.agent import (
    AgentProcess,
    browser_guard,
    run_cli,
    running_sim,
)
from tests.support.appliance import Appliance

pytestmark = pytest.mark.scenario

no_browser_left = pytest.fixture(autouse=True)(browser_guard)

NO_LOOPBACK = "listenPort: 5055\nips:\n  allow: [10.*, 192.168.*]\n  deny: []\n"


def test_s17_init_step_refuses_an_allow_list_without_loopback(tmp_path):
    """S17: the appliance's entrypoint runs the init step, which names the
    conf.yaml it uses, finds that ips.allow lets no 127.0.0.1 in (the agent
    would get 404 Access Denied) and stops the container with status 2 and one
    line naming the file and the fix, before anything starts or is written."""
    box = Appliance(tmp_path)
    (box.inputs / "conf.yaml").write_text(NO_LOOPBACK)
    before = box.sim.conf_path.read_text()
    with box:
        code = box.process.wait(60)
        log = box.log()
        left = box.processes()
    assert code == 2, log
    assert left == []
    errors = [line for line in log.splitlines() if "ConfigError" in line]
    assert len(errors) == 1, log
    assert str(box.inputs / "conf.yaml") in errors[0]
    assert "127.0.0.1" in errors[0]
    assert "starting supervisord" not in log
    assert box.sim.conf_path.read_text() == before  # nothing overwritten


def test_s17_init_step_names_the_conf_yaml_it_did_not_read(tmp_path):
    """S17: a conf.yaml dropped into a sub-folder of the inputs dir (mirroring
    the gateway's root/) or at the gateway dir's top is not read: the init step
    says which conf.yaml it used (the rendered default, with loopback allowed)
    and names each misplaced file with the place to move it to."""
    gateway = tmp_path / "gw"
    (gateway / "root").mkdir(parents=True)
    inputs = tmp_path / "inputs"
    (inputs / "root").mkdir(parents=True)
    (inputs / "root" / "conf.yaml").write_text(NO_LOOPBACK)
    (gateway / "conf.yaml").write_text(NO_LOOPBACK)
    env = {
        "PATH": "/usr/bin:/bin",
        "IBEAM_GATEWAY_DIR": str(gateway),
        "IBEAM_INPUTS_DIR": str(inputs),
    }
    done = run_cli(env, "init")
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "conf.yaml from the environment (templates/conf.yaml.j2)" in out
    for stray in (inputs / "root" / "conf.yaml", gateway / "conf.yaml"):
        assert f"{stray} is not read" in out
        assert f"only from {inputs / 'conf.yaml'}" in out
    written = yaml.safe_load((gateway / "root" / "conf.yaml").read_text())
    assert "127.0.0.1" in written["ips"]["allow"]


def test_s17_agent_treats_access_denied_as_configuration(tmp_path):
    """S17: a gateway whose conf.yaml (put straight into the gateway's root,
    bypassing the init step) shuts 127.0.0.1 out answers 404 Access Denied; the
    agent classes that as a configuration error naming the conf.yaml, never as
    an auth failure: no login attempt, nothing spent, checks slowly.  Once the
    file allows loopback and the gateway runs again, it logs in."""
    conf = {"ips": {"allow": ["10.*", "192.168.*"], "deny": []}}
    with running_sim(tmp_path, conf_overrides=conf) as sim:
        denied = sim.request("GET", "/v1/api/tickle")
        assert (denied.status_code, denied.text) == (404, "Access Denied")
        with AgentProcess(sim, tmp_path) as agent:
            status = agent.wait_state("MISCONFIGURED", timeout=30)
            assert str(sim.conf_path) in status["alert"]
            assert "127.0.0.1" in status["alert"] and "ips.allow" in status["alert"]
            time.sleep(4)  # several intervals
            status = agent.status()
            assert status["state"] == "MISCONFIGURED"
            assert status["failures"]["budget"]["spent"] == 0
            assert sim.state()["login_attempts"] == 0
            assert agent.get("/readyz")[0] == 503
            assert agent.get("/livez")[0] == 200

            # The operator fixes the file; the gateway (stopped) is started
            # again by the agent with it.
            text = yaml.safe_load(sim.conf_path.read_text())
            text["ips"]["allow"].append("127.0.0.1")
            sim.conf_path.write_text(yaml.safe_dump(text))
            sim.stop()
            ready = agent.wait_ready(90)
            state = sim.state()
            log = agent.log()

    assert ready["alert"] is None
    assert state["login_attempts"] == 1
    assert log.count("ALERT: the gateway answers 404 Access Denied") == 1
