"""image/entrypoint.sh functions, tested by sourcing the guarded script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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


def test_entrypoint_keeps_live_display_lock():
    lock = Path("/tmp/.X4712-lock")
    lock.write_text(f"{os.getpid():>10}\n")
    try:
        done = source_and_run("ibeam_clear_display_lock", {"DISPLAY": ":4712"})
        assert done.returncode == 2
        assert f"in use by pid {os.getpid()}" in done.stderr
        assert lock.exists()
    finally:
        lock.unlink(missing_ok=True)


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
