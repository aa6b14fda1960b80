"""image/entrypoint.sh functions, tested by sourcing the guarded script."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from ibeam_agents.browser import display_answers
from ibeam_agents.credentials import SECRET_VARIABLES
from tests.support.needs import require_binaries

ENTRYPOINT = Path(__file__).resolve().parents[2] / "image" / "entrypoint.sh"


def source_and_run(script: str, env: dict[str, str] | None = None, tmp=None):
    """Run bash: source the entrypoint, then script; return the completed process."""
    full_env = {"PATH": os.environ["PATH"], "HOME": str(tmp or "/tmp")}
    full_env.update(env or {})
    return subprocess.run(
        ["bash", "-c", f'. "{ENTRYPOINT}"\n{script}'],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_entrypoint_sourcing_runs_nothing():
    done = source_and_run("echo sourced")
    assert done.returncode == 0
    assert done.stdout == "sourced\n"


def test_entrypoint_defaults_fill_image_paths():
    done = source_and_run(
        "ibeam_defaults; "
        'echo "$IBEAM_RUN_DIR $IBEAM_GATEWAY_DIR $IBEAM_INPUTS_DIR $DISPLAY"'
    )
    assert done.stdout == "/run/ibeam /srv/clientportal.gw /srv/inputs :99\n"


def test_entrypoint_refuses_secret_and_file_twin(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("x\n")
    env = {"IBEAM_PASSWORD": "p", "IBEAM_PASSWORD_FILE": str(secret)}
    done = source_and_run("ibeam_check_secrets", env)
    assert done.returncode == 2
    assert "IBEAM_PASSWORD and IBEAM_PASSWORD_FILE are both set" in done.stderr
    assert "p\n" not in done.stderr


def test_entrypoint_refuses_unreadable_secret_file(tmp_path):
    env = {"IBEAM_ACCOUNT_FILE": str(tmp_path / "missing")}
    done = source_and_run("ibeam_check_secrets", env)
    assert done.returncode == 2
    assert "IBEAM_ACCOUNT_FILE=" in done.stderr


def test_entrypoint_clears_stale_display_lock(tmp_path):
    lock = Path("/tmp/.X4711-lock")
    lock.write_text("      999999\n")
    try:
        done = source_and_run("ibeam_clear_display_lock", {"DISPLAY": ":4711"})
        assert done.returncode == 0
        assert "removing stale lock of display :4711" in done.stdout
        assert not lock.exists()
    finally:
        lock.unlink(missing_ok=True)


def test_entrypoint_clears_lock_whose_pid_is_no_x_server():
    lock = Path("/tmp/.X4712-lock")
    lock.write_text(f"{os.getpid():>10}\n")  # alive, but no X server
    try:
        done = source_and_run("ibeam_clear_display_lock", {"DISPLAY": ":4712"})
        assert done.returncode == 0, done.stderr
        name = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
        assert f"pid {os.getpid()} is {name}, no X server" in done.stdout
        assert not lock.exists()
    finally:
        lock.unlink(missing_ok=True)


def test_entrypoint_keeps_lock_of_a_running_x_server():
    require_binaries("Xvfb")
    lock = Path("/tmp/.X4714-lock")
    xvfb = subprocess.Popen(
        ["Xvfb", ":4714", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not display_answers(":4714") and time.monotonic() < deadline:
            time.sleep(0.1)
        done = source_and_run("ibeam_clear_display_lock", {"DISPLAY": ":4714"})
        assert done.returncode == 2
        assert f"in use by X server Xvfb (pid {xvfb.pid})" in done.stderr
        assert lock.exists()
    finally:
        xvfb.terminate()
        xvfb.wait(10)


def test_entrypoint_keeps_lock_whose_socket_answers(tmp_path):
    """An X server of another pid namespace: its pid is not ours, its socket is."""
    lock, sock = Path("/tmp/.X4715-lock"), Path("/tmp/.X11-unix/X4715")
    sock.parent.mkdir(mode=0o1777, exist_ok=True)
    lock.write_text("    999999\n")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.listen()
    try:
        done = source_and_run("ibeam_clear_display_lock", {"DISPLAY": ":4715"})
        assert done.returncode == 2
        assert f"its socket {sock} answers" in done.stderr
        assert lock.exists() and sock.exists()
    finally:
        listener.close()
        lock.unlink(missing_ok=True)
        sock.unlink(missing_ok=True)


def test_entrypoint_runs_other_commands_as_is():
    done = subprocess.run(
        [str(ENTRYPOINT), "echo", "plain"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout == "plain\n"


def test_entrypoint_stops_on_bad_setting_before_supervisord(tmp_path):
    gateway = tmp_path / "gw"
    (gateway / "root").mkdir(parents=True)
    env = {
        "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
        "IBEAM_RUN_DIR": str(tmp_path / "run"),
        "IBEAM_GATEWAY_DIR": str(gateway),
        "IBEAM_INPUTS_DIR": str(tmp_path / "inputs"),
        "IBEAM_GATEWAY_PORT": "not-a-port",
        "DISPLAY": ":4713",
    }
    done = subprocess.run(
        [str(ENTRYPOINT), "supervisord", "-c", "/nonexistent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "ConfigError: IBEAM_GATEWAY_PORT must be a port number" in done.stderr
    assert "starting supervisord" not in done.stdout


def run_entrypoint(tmp_path, extra: dict[str, str]):
    """The entrypoint with a stand-in supervisord that prints its environment."""
    gateway = tmp_path / "gw"
    (gateway / "root").mkdir(parents=True, exist_ok=True)
    fake = tmp_path / "bin" / "supervisord"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\necho supervisord-started\nenv\n")
    fake.chmod(0o755)
    env = {
        "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "IBEAM_RUN_DIR": str(tmp_path / "run"),
        "IBEAM_GATEWAY_DIR": str(gateway),
        "IBEAM_INPUTS_DIR": str(tmp_path / "inputs"),
        "IBEAM_OUTPUTS_DIR": str(tmp_path / "outputs"),
        "DISPLAY": ":4716",
        **extra,
    }
    done = subprocess.run(
        [str(ENTRYPOINT), str(fake)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, gateway


def test_entrypoint_checks_agent_settings_before_supervisord(tmp_path):
    """A setting only the agent reads stops the appliance in the init step."""
    creds = {"IBEAM_ACCOUNT": "ep-user", "IBEAM_PASSWORD": "ep-pw-1"}
    done, gateway = run_entrypoint(
        tmp_path, {**creds, "IBEAM_MAINTENANCE_INTERVAL": "abc"}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == [
        "ConfigError: IBEAM_MAINTENANCE_INTERVAL must be a number of seconds "
        "greater than 0: got 'abc'"
    ]
    assert "supervisord-started" not in done.stdout
    assert not (gateway / "root" / "conf.yaml").exists()

    done, gateway = run_entrypoint(tmp_path, creds)
    assert done.returncode == 0, done.stderr
    assert "supervisord-started" in done.stdout
    assert "ep-pw-1" not in done.stdout + done.stderr
    assert (gateway / "root" / "conf.yaml").exists()


def test_entrypoint_checks_credentials_before_supervisord(tmp_path):
    cases = [
        ({"IBEAM_PASSWORD": "ep-pw-1"}, "IBEAM_ACCOUNT is not set"),
        (
            {
                "IBEAM_SECRETS_SOURCE": "fs",
                "IBEAM_ACCOUNT": "ep-account-name",
                "IBEAM_PASSWORD": "ep-pw-1",
            },
            "IBEAM_ACCOUNT must hold the path of a readable file",
        ),
    ]
    for extra, words in cases:
        done, gateway = run_entrypoint(tmp_path, extra)
        assert done.returncode == 2, done.stdout + done.stderr
        assert words in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "supervisord-started" not in done.stdout
        for value in extra.values():
            if value.startswith("ep-"):
                assert value not in done.stdout + done.stderr


def test_entrypoint_secret_list_is_the_agents():
    done = source_and_run('printf "%s\\n" "${IBEAM_SECRETS[@]}"')
    assert done.stdout.split() == list(SECRET_VARIABLES)


def test_entrypoint_hides_secrets_in_owner_only_files(tmp_path):
    run = tmp_path / "run"
    env = {
        "IBEAM_RUN_DIR": str(run),
        "IBEAM_PASSWORD": "P$w\"d#1\\a&b|c'z ",
        "IBEAM_ACCOUNT": "someone",
        "IBEAM_EXTERNAL_REQUEST_HEADERS": '{"Authorization": "Bearer t"}',
        "IBEAM_KEY": "",
    }
    (run / "secrets").mkdir(parents=True)
    (run / "secrets" / "IBEAM_TOTP_SECRET").write_text("left from the last start")
    done = source_and_run("ibeam_prepare_dirs; ibeam_hide_secrets; env", env, tmp_path)
    assert done.returncode == 0, done.stderr
    seen = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    secrets = run / "secrets"
    assert sorted(p.name for p in secrets.iterdir()) == [
        "IBEAM_ACCOUNT",
        "IBEAM_EXTERNAL_REQUEST_HEADERS",
        "IBEAM_PASSWORD",
    ]
    for name in ("IBEAM_ACCOUNT", "IBEAM_PASSWORD", "IBEAM_EXTERNAL_REQUEST_HEADERS"):
        assert name not in seen
        assert seen[f"{name}_FILE"] == str(secrets / name)
        assert (secrets / name).read_text() == env[name]  # byte for byte
        assert (secrets / name).stat().st_mode & 0o077 == 0
    assert secrets.stat().st_mode & 0o077 == 0
    assert "IBEAM_KEY" not in seen and "IBEAM_KEY_FILE" not in seen


def test_entrypoint_leaves_fs_source_paths_as_they_are(tmp_path):
    env = {
        "IBEAM_RUN_DIR": str(tmp_path / "run"),
        "IBEAM_SECRETS_SOURCE": " FS ",
        "IBEAM_PASSWORD": "/run/secrets/password",
        "IBEAM_TOTP_SECRET": "JBSWY3DPEHPK3PXP",
    }
    done = source_and_run("ibeam_prepare_dirs; ibeam_hide_secrets; env", env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "IBEAM_PASSWORD=/run/secrets/password\n" in done.stdout
    assert "IBEAM_TOTP_SECRET=" not in done.stdout
    assert "IBEAM_TOTP_SECRET_FILE=" in done.stdout
