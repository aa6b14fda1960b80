"""The command line in-process: parsing, subcommands, one-line errors."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from ibeam_agents import cli, logs
from ibeam_agents.budget import FailureBudget
from ibeam_agents.credentials import decrypt_password
from ibeam_agents.health import start_health_server


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("IBEAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IBEAM_GATEWAY_DIR", str(tmp_path / "gw"))
    monkeypatch.setenv("IBEAM_OUTPUTS_DIR", str(tmp_path / "out"))
    root = logging.getLogger()
    level = root.level
    yield monkeypatch
    logs.forget_secrets()
    root.setLevel(level)
    for handler in [h for h in root.handlers if isinstance(h, logs._FlushingHandler)]:
        root.removeHandler(handler)


def test_cli_parser_knows_ibeams_flags():
    parser = cli.build_parser()
    for flag in ("-a", "-k", "-m", "-s", "-t", "-c", "-u", "-l"):
        args = parser.parse_args([flag, "-v"])
        assert args.verbose and args.command is None
    with pytest.raises(SystemExit):
        parser.parse_args(["-a", "-k"])  # one mode at a time


def test_cli_bad_setting_prints_one_line_and_returns_2(env, capsys):
    env.setenv("IBEAM_MAX_FAILED_AUTH", "many")
    assert cli.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ConfigError: IBEAM_MAX_FAILED_AUTH must be a whole number of attempts "
        "at least 1: got 'many'"
    ]


def test_cli_encrypt_password_from_stdin(env, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("P$w\"d#1\\a&b|c'z\n"))
    assert cli.main(["encrypt-password"]) == 0
    out = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    assert (
        decrypt_password(out["IBEAM_PASSWORD"], out["IBEAM_KEY"]) == "P$w\"d#1\\a&b|c'z"
    )


def test_cli_encrypt_password_refuses_empty(env, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert cli.main(["encrypt-password"]) == 2
    assert capsys.readouterr().err.startswith("ConfigError: no password")


def test_cli_reset_failures(env, tmp_path, capsys):
    budget = FailureBudget(tmp_path / "out" / "failure-budget.json", 3)
    for _ in range(3):
        budget.spend("CredentialsRejected")
    assert cli.main(["reset-failures"]) == 0
    assert "was 3 of 3 spent" in capsys.readouterr().out
    assert budget.spent == 0


def test_cli_status_without_agent_returns_1(env, capsys):
    assert cli.main(["status", "--url", "http://127.0.0.1:9"]) == 1
    assert "no agent answers" in capsys.readouterr().err


class _Source:
    def __init__(self, snap):
        self.snap = snap

    def snapshot(self):
        return self.snap

    def command(self, name):
        pass

    def metrics_text(self):
        return b""


@pytest.mark.parametrize(
    "state,kind,code", [("READY", "AUTHENTICATED", 0), ("DEGRADED", "TRANSIENT", 1)]
)
def test_cli_status_prints_the_agents_json(env, capsys, state, kind, code):
    source = _Source({"state": state, "status": {"kind": kind}})
    server, thread = start_health_server("127.0.0.1", 0, source)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert cli.main(["status", "--url", url]) == code
        assert json.loads(capsys.readouterr().out)["state"] == state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_cli_errors_are_redacted(env, capsys, monkeypatch):
    logs.register_secret("sekrit-value")

    def boom(args):
        from ibeam_agents.errors import ConfigError

        raise ConfigError("something about sekrit-value")

    monkeypatch.setattr(cli, "dispatch", boom)
    assert cli.main([]) == 2
    assert "sekrit-value" not in capsys.readouterr().err


def test_cli_split_init_finds_the_init_subcommand():
    assert cli.split_init(["init", "--gateway-dir", "/gw"]) == ["--gateway-dir", "/gw"]
    assert cli.split_init(["-v", "init", "--agent-env", "f"]) == ["--agent-env", "f"]
    assert cli.split_init(["init"]) == []
    assert cli.split_init(["status", "init"]) is None
    assert cli.split_init(["-a"]) is None
    assert cli.split_init([]) is None


def test_cli_init_passes_every_option_to_the_init_step(env, monkeypatch):
    seen = []
    monkeypatch.setattr("ibeam_agents.init.main", lambda argv: seen.append(argv) or 0)
    argv = ["--gateway-dir", "/gw", "--inputs-dir", "/in", "--agent-env", "/run/a"]
    assert cli.main(["init", *argv]) == 0
    assert cli.main(["-v", "init", "--help"]) == 0
    assert seen == [argv, ["--help"]]
