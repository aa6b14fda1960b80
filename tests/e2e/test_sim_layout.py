"""The installed gateway directory and the process it starts, like IBKR's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from gateway_sim.harness import SimGateway, free_port

pytestmark = pytest.mark.e2e

MAIN_CLASS = "ibgroup.web.core.clientportal.gw.GatewayStart"
VERSION = "a27ed42161ad96c53e715ca5c5e3e3fa4cff5262 Mon, 24 Apr 2023 15:41:53 -0400"
IBKR_CONF = {
    "ip2loc": "US",
    "proxyRemoteSsl": True,
    "proxyRemoteHost": "https://api.ibkr.com",
    "listenPort": 5000,
    "listenSsl": True,
    "ccp": False,
    "svcEnvironment": "v1",
    "sslCert": "vertx.jks",
    "sslPwd": "mywebapi",
    "authDelay": 3000,
    "portalBaseURL": "",
    "serverOptions": {
        "blockedThreadCheckInterval": 1000000,
        "eventLoopPoolSize": 20,
        "workerPoolSize": 20,
        "maxWorkerExecuteTime": 100,
        "internalBlockingPoolSize": 20,
    },
    "cors": {"origin.allowed": "*", "allowCredentials": False},
    "webApps": [{"name": "demo", "index": "index.html"}],
    "ips": {"allow": ["192.*", "131.216.*", "127.0.0.1"], "deny": ["212.90.324.10"]},
}


def run_cli(*args: str, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway_sim", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_install_lays_out_the_real_files(tmp_path):
    result = run_cli("install", str(tmp_path / "gw"))
    assert result.returncode == 0, result.stderr
    root = tmp_path / "gw"
    assert os.access(root / "bin" / "run.sh", os.X_OK)
    assert yaml.safe_load((root / "root" / "conf.yaml").read_text()) == IBKR_CONF
    store = (root / "root" / "vertx.jks").read_bytes()
    key, cert, _ = pkcs12.load_key_and_certificates(store, b"mywebapi")
    assert key is not None
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "Client Portal Web API"
    accounts = yaml.safe_load((root / "sim" / "accounts.yaml").read_text())
    assert accounts["accounts"][0]["user"] == "demo"


def test_install_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file").write_text("x")
    result = run_cli("install", str(tmp_path / "stuff"), "--force")
    assert result.returncode == 2
    assert "--force only replaces a gateway directory" in result.stderr
    assert run_cli("install", str(tmp_path / "gw")).returncode == 0
    assert run_cli("install", str(tmp_path / "gw")).returncode == 2
    assert run_cli("install", str(tmp_path / "gw"), "--force").returncode == 0


def test_install_takes_an_accounts_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("accounts:\n  - {user: alice, password: 'a b', mode: paper}\n")
    assert (
        run_cli("install", str(tmp_path / "gw"), "--accounts", str(good)).returncode
        == 0
    )
    assert "alice" in (tmp_path / "gw" / "sim" / "accounts.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("accounts:\n  - {user: bob, password: x, mode: demo}\n")
    result = run_cli("install", str(tmp_path / "gw2"), "--accounts", str(bad))
    assert result.returncode == 2
    assert "mode must be live or paper" in result.stderr
    assert not (tmp_path / "gw2").exists()


def test_run_sh_without_argument_prints_usage(tmp_path):
    run_cli("install", str(tmp_path / "gw"))
    result = subprocess.run(
        ["bin/run.sh"], cwd=tmp_path / "gw", capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "usage: bin/run.sh /path/to/conf.yaml"


def test_start_prints_the_real_banner(sim):
    lines = sim.console().splitlines()
    port = sim.port
    assert lines == [
        "running  ",
        " runtime path : root:dist/ibgroup.web.core.iblink.router.clientportal.gw.jar"
        ":build/lib/runtime/*",
        " config file  : root/conf.yaml",
        " -> mount demo on /demo",
        "Java Version: 17.0.15",
        "*" * 52,
        f"version: {VERSION}",
        "*" * 52,
        "This is the Client Portal Gateway",
        "for any issues, please contact api@ibkr.com",
        "and include a copy of your logs",
        "*" * 52,
        "https://www.interactivebrokers.com/api/doc.html",
        "*" * 52,
        f"Open https://localhost:{port} to login",
        f"App demo is available after you login under: https://localhost:{port}/demo#/",
    ]


def test_process_command_line_names_the_main_class(sim):
    command = psutil.Process(sim.pid).cmdline()
    assert MAIN_CLASS in command
    assert command[-2:] == ["--conf", "../root/conf.yaml"]
    assert sim.process_match in " ".join(command) + " "


def test_unknown_conf_key_aborts_startup(tmp_path):
    gw = SimGateway(tmp_path / "gw", conf_overrides={"fooBar": 1}).install()
    gw.start(wait=False)
    assert gw.process.wait(30) == 1
    console = gw.console()
    assert "Failed to load configuration file: ../root/conf.yaml" in console
    assert (
        f"Cannot create property=fooBar for JavaBean={MAIN_CLASS[:-12]}Config@"
        in console
    )
    assert (
        f"Unable to find property 'fooBar' on class: {MAIN_CLASS[:-12]}Config"
        in console
    )


def test_config_is_found_only_from_the_gateway_directory(tmp_path):
    run_cli("install", str(tmp_path / "gw"))
    missing = subprocess.run(
        ["bin/run.sh", "root/other.yaml"],
        cwd=tmp_path / "gw",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 1
    assert "Failed to load configuration file: ../root/other.yaml" in missing.stdout
    assert "java.io.IOException: Stream closed" in missing.stdout
    elsewhere = subprocess.run(
        ["gw/bin/run.sh", "gw/root/conf.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert elsewhere.returncode == 1
    assert "Stream closed" in elsewhere.stdout


def test_busy_port_leaves_process_up_serving_nothing(sim_factory):
    first = sim_factory()
    second = sim_factory(port=first.port)
    assert second.running()
    assert second.state()["listening"] is False
    assert "Server listen failed Address already in use" in second.console()
    assert first.state()["listening"] is True


def test_startup_delay_postpones_listening(tmp_path):
    gw = SimGateway(tmp_path / "gw", startup_delay_ms=3000).install()
    try:
        gw.start(wait=False)
        time.sleep(0.5)
        assert "Java Version" not in gw.console()
        assert gw.running()
        gw.wait_ready(30)
        assert "Java Version" in gw.console()
    finally:
        gw.stop()


def test_serve_command_runs_an_installed_directory(tmp_path):
    run_cli("install", str(tmp_path / "gw"))
    port, control = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway_sim", "serve", str(tmp_path / "gw")]
        + ["--port", str(port), "--control-port", str(control)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        gw = SimGateway(tmp_path / "gw", port=port, control_port=control)
        gw.process = process
        gw.wait_ready(30)
        assert MAIN_CLASS in psutil.Process(process.pid).cmdline()
        assert gw.request("GET", "/clear").text == "cleared"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_bad_simulator_settings_exit_2(tmp_path):
    gw = SimGateway(tmp_path / "gw", faults={"lockout_after": "five"}).install()
    gw.start(wait=False)
    assert gw.process.wait(30) == 2
    assert "lockout_after must be an integer" in gw.console()
    gw = SimGateway(tmp_path / "gw2").install()
    (gw.root / "sim" / "accounts.yaml").write_text("accounts:\n  - {user: x}\n")
    gw.start(wait=False)
    assert gw.process.wait(30) == 2
    assert "accounts[0].password must be a non-empty string" in gw.console()


def test_demo_web_app_is_served(sim):
    response = sim.request("GET", "/demo/")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=86400"
    assert "Client Portal Gateway demo" in response.text


def test_logs_record_requests_but_no_password(sim_factory):
    secret = "Sup3r-S3cret-Pa55"
    gw = sim_factory(accounts=[{"user": "eve", "password": secret}])
    gw.http_login("eve", secret)
    logs = list((gw.root / "logs").glob("gw.*.log"))
    text = "".join(path.read_text() for path in logs)
    assert "-> POST /sso/Authenticator" in text
    assert "Client login succeeds" in text
    assert secret not in text
    assert secret not in gw.console()


def test_sigterm_stops_the_gateway(sim):
    process = psutil.Process(sim.pid)
    process.terminate()
    assert process.wait(10) == -signal.SIGTERM


def test_harness_moves_off_a_port_taken_on_ipv6_loopback(tmp_path, monkeypatch):
    import gateway_sim.harness as harness

    taken = free_port()
    squatter = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    squatter.bind(("::1", taken))
    squatter.listen()
    ports = iter([taken])
    monkeypatch.setattr(harness, "free_port", lambda: next(ports, None) or free_port())
    gw = SimGateway(tmp_path / "gw").install()
    try:
        assert gw.port == taken
        gw.start()
        assert gw.port != taken
        assert gw.request("GET", "/clear").text == "cleared"
    finally:
        gw.stop()
        squatter.close()


def test_resident_memory_stays_a_few_tens_of_mb(sim_factory):
    gw = sim_factory(faults={"auth_delay_ms": 200, "pacing": False})
    gw.http_login()
    for _ in range(50):
        gw.request("POST", "/v1/api/tickle")
    assert gw.state()["resident_mb"] < 80
