"""Command line, banner and replies of gateway_sim.server."""

from __future__ import annotations

import pytest

from gateway_sim.bodies import Reply
from gateway_sim.conf import GatewayConf
from gateway_sim.server import MAIN_CLASS, UsageError, banner, main, parse_command

RUN_SH_ARGS = [
    "-server",
    "-Dgateway_sim.dir=/srv/gw",
    "-Dvertx.disableDnsResolver=true",
    "-cp",
    "root:dist/ibgroup.web.core.iblink.router.clientportal.gw.jar:build/lib/runtime/*",
    MAIN_CLASS,
]


def test_run_sh_arguments_are_understood():
    command = parse_command([*RUN_SH_ARGS, "--conf", "../root/conf.yaml"])
    assert command.classpath[0] == "root"
    assert command.conf == "../root/conf.yaml"
    assert (command.port, command.nossl, command.control_port) == (None, False, None)


def test_gateway_options():
    command = parse_command([*RUN_SH_ARGS, "-c", "x.yaml", "--port", "5055", "--nossl"])
    assert (command.conf, command.port, command.nossl) == ("x.yaml", 5055, True)
    assert parse_command([*RUN_SH_ARGS, "--control-port", "6000"]).control_port == 6000
    assert parse_command([MAIN_CLASS]).conf == "conf.yaml"


@pytest.mark.parametrize(
    "argv",
    [
        ["-cp", "root", "some.other.Main"],
        [*RUN_SH_ARGS, "--bogus"],
        [*RUN_SH_ARGS, "--port"],
        [*RUN_SH_ARGS, "--port", "http"],
    ],
)
def test_bad_command_lines(argv):
    with pytest.raises(UsageError):
        parse_command(argv)


def test_main_prints_usage_and_exits_1(capsys):
    assert main([*RUN_SH_ARGS, "--what"]) == 1
    output = capsys.readouterr()
    assert "Unrecognized option: --what" in output.err
    assert output.out.startswith("usage: java -jar gw.jar GatewayStart")
    assert main([*RUN_SH_ARGS, "--help"]) == 0


def test_banner_without_web_apps_and_with_http():
    conf = GatewayConf(values={"webApps": None, "ips": None}, path="conf.yaml")
    lines = banner(conf, 5055, tls=False)
    assert lines[0] == "Java Version: 17.0.15"
    assert lines[1] == "*" * 52
    assert lines[-1] == "Open http://localhost:5055 to login"


def test_reply_payloads_and_types():
    assert Reply(200, {"status": True}).payload() == b'{"status":true}'
    assert Reply(200, {"a": 1}).media_type() == "application/json;charset=utf-8"
    assert Reply(404, b"Access Denied").media_type() is None
    assert Reply(200, "cleared").payload() == b"cleared"
