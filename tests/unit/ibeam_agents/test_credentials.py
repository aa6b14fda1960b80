"""Credentials from env, _FILE twins, prompts and Fernet tokens."""

from __future__ import annotations

import logging

import pytest

from ibeam_agents import credentials as creds
from ibeam_agents import logs
from ibeam_agents.credentials import (
    Credentials,
    decrypt_password,
    encrypt_password,
    load_credentials,
    read_secret,
)
from ibeam_agents.errors import ConfigError, MissingCredentialError

HOSTILE = "P$w\"d#1\\a&b|c'z"


@pytest.fixture(autouse=True)
def _fresh_state():
    creds._warned_quotes.clear()
    yield
    logs.forget_secrets()


def test_credentials_from_environment():
    got = load_credentials({"IBEAM_ACCOUNT": "user1", "IBEAM_PASSWORD": HOSTILE})
    assert got == Credentials("user1", HOSTILE)


def test_credentials_repr_masks_both():
    text = repr(Credentials("user1", "secret-pw"))
    assert "user1" not in text and "secret-pw" not in text


def test_credentials_env_value_keeps_every_byte_but_the_line_end():
    got = load_credentials({"IBEAM_ACCOUNT": "u", "IBEAM_PASSWORD": " a b \r\n"})
    assert got.password == " a b "


def test_credentials_from_files(tmp_path):
    (tmp_path / "acct").write_text("user1\n")
    (tmp_path / "pw").write_text(HOSTILE + "\n")
    got = load_credentials(
        {
            "IBEAM_ACCOUNT_FILE": str(tmp_path / "acct"),
            "IBEAM_PASSWORD_FILE": str(tmp_path / "pw"),
        }
    )
    assert got == Credentials("user1", HOSTILE)


def test_credentials_secrets_source_fs_reads_paths(tmp_path):
    (tmp_path / "pw").write_text("from-file")
    env = {
        "IBEAM_SECRETS_SOURCE": "fs",
        "IBEAM_ACCOUNT": "u",
        "IBEAM_PASSWORD": str(tmp_path / "pw"),
    }
    (tmp_path / "u").write_text("ignored")
    env["IBEAM_ACCOUNT"] = str(tmp_path / "u")
    assert load_credentials(env) == Credentials("ignored", "from-file")


@pytest.mark.parametrize("name", ["IBEAM_ACCOUNT", "IBEAM_PASSWORD", "IBEAM_KEY"])
def test_credentials_fs_source_never_shows_a_value_that_is_no_path(tmp_path, name):
    """The slip of switching to fs with the values still set: name, rule, fix."""
    (tmp_path / "ok").write_text("fine")
    env = {
        "IBEAM_SECRETS_SOURCE": "fs",
        "IBEAM_ACCOUNT": str(tmp_path / "ok"),
        "IBEAM_PASSWORD": str(tmp_path / "ok"),
        name: "MySecretPw!",
    }
    with pytest.raises(ConfigError) as info:
        load_credentials(env, interactive=False)
    text = str(info.value)
    assert "MySecretPw" not in text
    assert text.startswith(f"{name} must hold the path of a readable file")
    assert "IBEAM_SECRETS_SOURCE=fs" in text
    assert "unset IBEAM_SECRETS_SOURCE" in text and f"{name}_FILE" in text
    # the OSError carries the value as its file name: not chained, not shown
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_credentials_fs_source_empty_or_binary_file_hides_the_path(tmp_path):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    for content, words in (("empty", "an empty file"), ("binary", "not UTF-8")):
        env = {"IBEAM_SECRETS_SOURCE": "fs", "IBEAM_PASSWORD": str(tmp_path / content)}
        with pytest.raises(ConfigError, match=words) as info:
            read_secret(env, "IBEAM_PASSWORD", file_source=True)
        assert str(tmp_path) not in str(info.value)


def test_credentials_both_variable_and_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="IBEAM_PASSWORD and IBEAM_PASSWORD_FILE"):
        read_secret(
            {"IBEAM_PASSWORD": "a", "IBEAM_PASSWORD_FILE": "/x"}, "IBEAM_PASSWORD"
        )


def test_credentials_unreadable_file_names_setting_not_content(tmp_path):
    with pytest.raises(ConfigError) as info:
        read_secret({"IBEAM_PASSWORD_FILE": str(tmp_path / "no")}, "IBEAM_PASSWORD")
    assert "IBEAM_PASSWORD_FILE" in str(info.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_secret({"IBEAM_PASSWORD_FILE": str(tmp_path / "empty")}, "IBEAM_PASSWORD")


def test_credentials_missing_without_terminal_exits_2():
    with pytest.raises(MissingCredentialError) as info:
        load_credentials({"IBEAM_ACCOUNT": "u"}, interactive=False)
    assert "IBEAM_PASSWORD" in str(info.value)
    assert info.value.exit_code == 2


def test_credentials_missing_on_terminal_are_prompted():
    asked = []

    def prompt(label):
        asked.append(label)
        return {"IBKR user name: ": "user1", "IBKR password: ": HOSTILE}[label]

    got = load_credentials({}, prompt=prompt, interactive=True)
    assert got == Credentials("user1", HOSTILE)
    assert asked == ["IBKR user name: ", "IBKR password: "]


def test_credentials_prompt_interrupted_is_a_clear_error():
    def prompt(label):
        raise EOFError

    with pytest.raises(MissingCredentialError, match="IBEAM_ACCOUNT"):
        load_credentials({}, prompt=prompt, interactive=True)


def test_credentials_fernet_round_trip():
    token, key = encrypt_password(HOSTILE)
    assert HOSTILE not in token
    got = load_credentials(
        {"IBEAM_ACCOUNT": "u", "IBEAM_PASSWORD": token, "IBEAM_KEY": key}
    )
    assert got.password == HOSTILE


def test_credentials_fernet_reuses_a_given_key():
    _, key = encrypt_password("a")
    token, same = encrypt_password("b", key)
    assert same == key
    assert decrypt_password(token, key) == "b"


def test_credentials_fernet_bad_key_and_bad_token():
    with pytest.raises(ConfigError, match="IBEAM_KEY is not a Fernet key"):
        decrypt_password("x", "short")
    _, key = encrypt_password("a")
    with pytest.raises(ConfigError, match="encrypt-password"):
        decrypt_password("not-a-token", key)


def test_credentials_key_without_password_is_an_error():
    _, key = encrypt_password("a")
    with pytest.raises(MissingCredentialError, match="IBEAM_KEY"):
        load_credentials({"IBEAM_ACCOUNT": "u", "IBEAM_KEY": key}, interactive=False)


def test_credentials_quoted_value_warns_once_without_value(caplog):
    env = {"IBEAM_ACCOUNT": "u", "IBEAM_PASSWORD": '"quoted-secret"'}
    with caplog.at_level(logging.WARNING):
        first = load_credentials(env)
        load_credentials(env)
    assert first.password == '"quoted-secret"'
    warnings = [r for r in caplog.records if "IBEAM_PASSWORD" in r.getMessage()]
    assert len(warnings) == 1
    assert "quoted-secret" not in caplog.text


def test_credentials_quoted_secret_file_warns_naming_the_secret(caplog, tmp_path):
    """The appliance moves IBEAM_PASSWORD from an env file into a secret file."""
    secret = tmp_path / "IBEAM_PASSWORD"
    secret.write_text("'quoted-secret'")
    env = {"IBEAM_ACCOUNT": "u", "IBEAM_PASSWORD_FILE": str(secret)}
    with caplog.at_level(logging.WARNING):
        got = load_credentials(env)
    assert got.password == "'quoted-secret'"
    assert "IBEAM_PASSWORD starts and ends with a quote" in caplog.text
    assert "quoted-secret" not in caplog.text


def test_credentials_loaded_secrets_are_redacted_in_logs():
    load_credentials({"IBEAM_ACCOUNT": "someuser", "IBEAM_PASSWORD": HOSTILE})
    assert logs.redact(f"typed {HOSTILE} for someuser") == "typed *** for ***"


def test_credentials_padded_value_warns_and_is_kept(caplog):
    env = {"IBEAM_ACCOUNT": "u", "IBEAM_PASSWORD": "padded-secret "}
    with caplog.at_level(logging.WARNING):
        got = load_credentials(env)
    assert got.password == "padded-secret "
    assert "white space" in caplog.text and "IBEAM_PASSWORD" in caplog.text
    assert "padded-secret" not in caplog.text


def test_credentials_from_own_environment_are_scrubbed(monkeypatch):
    monkeypatch.setenv("IBEAM_ACCOUNT", "user1")
    monkeypatch.setenv("IBEAM_PASSWORD", HOSTILE)
    monkeypatch.setenv("IBEAM_TOTP_SECRET", "JBSWY3DPEHPK3PXP")
    monkeypatch.setenv("IBEAM_GATEWAY_DIR", "/srv/gw")
    got = load_credentials(interactive=False)
    assert got == Credentials("user1", HOSTILE)
    for name in ("IBEAM_ACCOUNT", "IBEAM_PASSWORD", "IBEAM_TOTP_SECRET"):
        assert name not in creds.os.environ
    assert creds.os.environ["IBEAM_GATEWAY_DIR"] == "/srv/gw"


def test_credentials_from_a_given_mapping_leave_it_alone():
    env = {"IBEAM_ACCOUNT": "u", "IBEAM_PASSWORD": "pw-123"}
    load_credentials(env)
    assert env == {"IBEAM_ACCOUNT": "u", "IBEAM_PASSWORD": "pw-123"}
