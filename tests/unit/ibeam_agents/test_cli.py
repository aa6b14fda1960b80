"""The command line in-process: parsing, subcommands, one-line errors."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest

from ibeam_agents import cli, logs
from ibeam_agents.budget import FailureBudget
from ibeam_agents.credentials import decrypt_password
from ibeam_agents.errors import ConfigError
from ibeam_agents.health import start_health_server
from tests.support.ports import free_port


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


def test_cli_status_with_a_malformed_url_returns_2(env, capsys):
    assert cli.main(["status", "--url", "notaurl"]) == 2
    assert capsys.readouterr().err.startswith("ConfigError: --url must be")


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


def _held_by_someone(path) -> bool:
    """Whether another open file description holds path's flock."""
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.fixture
def maintain_trap(env, monkeypatch):
    """GatewayClient.maintain replaced: records the lock file while it 'runs'."""
    from ibeam_agents import keeper

    env.setenv("IBEAM_ACCOUNT", "lock-user")
    env.setenv("IBEAM_PASSWORD", "lock-pw")
    script = Path(os.environ["IBEAM_GATEWAY_DIR"]) / "bin" / "run.sh"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    seen = []

    def maintain(self, *, maintain_only=False, health=True):
        path = self.settings.outputs_dir / cli.AGENT_LOCK_NAME
        seen.append((maintain_only, path.read_text(), _held_by_someone(path)))
        return 0

    monkeypatch.setattr(keeper.GatewayClient, "maintain", maintain)
    return seen


@pytest.mark.parametrize("argv", [[], ["-m"]])
def test_cli_maintaining_run_holds_the_agent_lock(maintain_trap, tmp_path, argv):
    assert cli.main(argv) == 0
    assert maintain_trap == [(argv == ["-m"], f"{os.getpid()}\n", True)]
    lock = tmp_path / "out" / cli.AGENT_LOCK_NAME
    assert not _held_by_someone(lock) and lock.read_text() == ""


def test_cli_second_agent_is_refused_naming_the_first(
    maintain_trap, env, tmp_path, capsys
):
    def run(argv):
        env.setenv("IBEAM_ACCOUNT", "lock-user")  # the agent drops them once read
        env.setenv("IBEAM_PASSWORD", "lock-pw")
        return cli.main(argv)

    outputs = tmp_path / "out"
    with cli.agent_lock(outputs):
        assert run([]) == 2
        assert run(["-m"]) == 2
    assert maintain_trap == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0] == err[1]
    assert err[0].startswith(f"ConfigError: another agent (pid {os.getpid()}) ")
    assert str(outputs) in err[0]
    assert run([]) == 0  # released with the holder


@pytest.mark.parametrize("argv", [[], ["-m"], ["-s"], ["-a"]])
def test_cli_gateway_dir_without_run_sh_is_refused_at_once(env, capsys, argv):
    """Standalone, with no gateway answering: a setting error, not a halted agent."""
    env.setenv("IBEAM_ACCOUNT", "u")
    env.setenv("IBEAM_PASSWORD", "pw")
    env.setenv("IBEAM_GATEWAY_BASE_URL", f"https://127.0.0.1:{free_port()}")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ConfigError: IBEAM_GATEWAY_DIR=")
    assert "has no bin/run.sh" in err[0]


def test_cli_agent_lock_in_an_unwritable_place_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="IBEAM_OUTPUTS_DIR=.*cannot be opened"):
        with cli.agent_lock(blocker / "out"):
            pass


def test_cli_one_shots_do_not_take_the_agent_lock(env, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_one_call", lambda args, s: seen.append("call") or 0)
    monkeypatch.setattr(cli, "_one_shot", lambda args, s: seen.append("shot") or 0)
    with cli.agent_lock(tmp_path / "out"):
        for flag in ("-t", "-c", "-u", "-l", "-k", "-s", "-a"):
            assert cli.main([flag]) == 0, flag
        assert cli.main(["reset-failures"]) == 0
    assert seen == ["call"] * 4 + ["shot"] * 3


def _encrypt(monkeypatch, capsys, argv, password="pw-to-encrypt"):
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    code = cli.main(["encrypt-password", *argv])
    captured = capsys.readouterr()
    out = dict(line.split("=", 1) for line in captured.out.split())
    return code, out, captured.err


def test_cli_encrypt_password_reuses_ibeam_key(env, monkeypatch, capsys, tmp_path):
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    env.setenv("IBEAM_KEY", key)
    code, out, err = _encrypt(monkeypatch, capsys, [])
    assert code == 0 and out["IBEAM_KEY"] == key
    assert decrypt_password(out["IBEAM_PASSWORD"], key) == "pw-to-encrypt"
    assert "key of IBEAM_KEY" in err and key not in err
    env.delenv("IBEAM_KEY")
    (tmp_path / "key").write_text(key + "\n")
    env.setenv("IBEAM_KEY_FILE", str(tmp_path / "key"))
    code, out, _ = _encrypt(monkeypatch, capsys, [])
    assert code == 0 and out["IBEAM_KEY"] == key
    env.delenv("IBEAM_KEY_FILE")
    code, out, _ = _encrypt(monkeypatch, capsys, [])
    assert code == 0 and out["IBEAM_KEY"] != key  # nothing given: a new key


def test_cli_encrypt_password_bad_key_names_where_it_came_from(
    env, monkeypatch, capsys, tmp_path
):
    (tmp_path / "key").write_text("not-a-key\n")
    cases = [
        ({"IBEAM_KEY": "not-a-key"}, [], "IBEAM_KEY is not"),
        ({"IBEAM_KEY_FILE": str(tmp_path / "key")}, [], "key in IBEAM_KEY_FILE is"),
        ({"IBEAM_KEY": "not-a-key"}, ["--key", "also-bad"], "--key is not"),
    ]
    for variables, argv, named in cases:
        for name, value in variables.items():
            env.setenv(name, value)
        monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
        assert cli.main(["encrypt-password", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0] and "not-a-key" not in err[0]
        for name in variables:
            env.delenv(name)


def test_cli_encrypt_password_asks_for_the_key(env, monkeypatch, capsys):
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    asked = []
    monkeypatch.setattr(cli, "_terminal_available", lambda: True)
    monkeypatch.setattr(cli.getpass, "getpass", lambda text: asked.append(text) or key)
    code, out, _ = _encrypt(monkeypatch, capsys, ["--key"])
    assert code == 0 and out["IBEAM_KEY"] == key and asked == ["Fernet key to reuse: "]
    assert decrypt_password(out["IBEAM_PASSWORD"], key) == "pw-to-encrypt"

    monkeypatch.setattr(cli, "_terminal_available", lambda: False)
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert cli.main(["encrypt-password", "--key"]) == 2
    assert "there is no terminal; set IBEAM_KEY_FILE" in capsys.readouterr().err


def test_cli_encrypt_password_help_warns_about_key_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        cli.main(["encrypt-password", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "visible to other users" in text and "IBEAM_KEY_FILE" in text
