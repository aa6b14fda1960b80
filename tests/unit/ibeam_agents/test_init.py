"""The appliance init step: conf.yaml rendering, inputs, certificates, writing."""

from __future__ import annotations

import os
import stat

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ibeam_agents import certs, init
from ibeam_agents.errors import ConfigError, MissingCredentialError

INPUTS_CONF = """\
listenPort: 5055
listenSsl: true
sslCert: "vertx.jks"
sslPwd: "mywebapi"
ips:
  allow:
    - 127.0.0.1
    - 192.168.0.0/16
  deny:
    - 0.0.0.0/0
"""


@pytest.fixture
def dirs(tmp_path):
    gateway = tmp_path / "gw"
    (gateway / "root").mkdir(parents=True)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return gateway, inputs


def run_init(dirs, environ=None, agent_env=None):
    gateway, inputs = dirs
    return init.run(
        gateway_dir=gateway,
        inputs_dir=inputs,
        environ=environ or {},
        agent_env=agent_env,
    )


def written_conf(dirs):
    return yaml.safe_load((dirs[0] / "root" / "conf.yaml").read_text())


def test_render_uses_ibkr_defaults_and_loopback(dirs):
    run_init(dirs)
    conf = written_conf(dirs)
    assert conf["listenPort"] == 5000
    assert conf["listenSsl"] is True
    assert conf["proxyRemoteHost"] == "https://api.ibkr.com"
    assert conf["sslCert"] == "vertx.jks"
    assert conf["authDelay"] == 3000
    assert conf["ips"]["allow"][0] == "127.0.0.1"
    assert "172.31.*" in conf["ips"]["allow"]
    assert conf["ips"]["deny"] == []


def test_render_takes_values_from_environment(dirs):
    environ = {
        "IBEAM_GATEWAY_PORT": "5123",
        "IBEAM_GATEWAY_TLS": "off",
        "IBEAM_GATEWAY_ALLOW": "127.0.0.1, 10.0.0.0/8 172.17.0.0/24",
        "IBEAM_GATEWAY_DENY": "10.9.9.9",
        "IBEAM_GATEWAY_UPSTREAM": "http://127.0.0.1:9",
    }
    plan = run_init(dirs, environ)
    conf = written_conf(dirs)
    assert conf["listenPort"] == 5123
    assert conf["listenSsl"] is False
    assert conf["proxyRemoteHost"] == "http://127.0.0.1:9"
    assert conf["ips"] == {
        "allow": ["127.0.0.1", "10.*", "172.17.0.*"],
        "deny": ["10.9.9.9"],
    }
    assert "IBEAM_GATEWAY_ALLOW: 10.0.0.0/8 written as 10.*" in plan.notes[0]


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("IBEAM_GATEWAY_PORT", "http", "IBEAM_GATEWAY_PORT must be a port"),
        ("IBEAM_GATEWAY_PORT", "0", "IBEAM_GATEWAY_PORT must be a port"),
        ("IBEAM_GATEWAY_TLS", "maybe", "IBEAM_GATEWAY_TLS must be true or false"),
        ("IBEAM_GATEWAY_ALLOW", "10.*", "add 127.0.0.1 to IBEAM_GATEWAY_ALLOW"),
        ("IBEAM_GATEWAY_DENY", "127.0.0.1", "IBEAM_GATEWAY_DENY matches 127.0.0.1"),
        ("IBEAM_GATEWAY_ALLOW", "127.0.0.1,*", "IBEAM_GATEWAY_ALLOW entry"),
        ("IBEAM_GATEWAY_ALLOW", "127.0.0.1,172.16.0.0/12", "172.16.0.0/12"),
        ("IBEAM_GATEWAY_UPSTREAM", "api.ibkr.com", "IBEAM_GATEWAY_UPSTREAM must be"),
        ("IBEAM_GATEWAY_BASE_URL", "localhost:5000", "IBEAM_GATEWAY_BASE_URL must"),
    ],
)
def test_bad_setting_is_refused_and_nothing_written(dirs, name, value, match):
    with pytest.raises(ConfigError, match=match):
        run_init(dirs, {name: value})
    assert not (dirs[0] / "root" / "conf.yaml").exists()


def test_inputs_conf_wins_over_environment(dirs):
    (dirs[1] / "conf.yaml").write_text(INPUTS_CONF)
    plan = run_init(dirs, {"IBEAM_GATEWAY_PORT": "5999"})
    conf = written_conf(dirs)
    assert conf["listenPort"] == 5055
    assert plan.conf_source == str(dirs[1] / "conf.yaml")
    assert any("IBEAM_GATEWAY_PORT is ignored" in note for note in plan.notes)


def test_inputs_conf_cidr_is_corrected(dirs):
    (dirs[1] / "conf.yaml").write_text(INPUTS_CONF)
    run_init(dirs)
    assert written_conf(dirs)["ips"] == {
        "allow": ["127.0.0.1", "192.168.*"],
        "deny": [],
    }


def test_inputs_conf_without_changes_is_copied_verbatim(dirs):
    text = INPUTS_CONF.replace("192.168.0.0/16", "192.168.*").replace(
        "0.0.0.0/0", "9.9.9.9"
    )
    (dirs[1] / "conf.yaml").write_text(text)
    run_init(dirs)
    assert (dirs[0] / "root" / "conf.yaml").read_text() == text


def test_bad_inputs_conf_leaves_previous_file(dirs):
    target = dirs[0] / "root" / "conf.yaml"
    target.write_text("previous\n")
    (dirs[1] / "conf.yaml").write_text(INPUTS_CONF + "fooBar: 1\n")
    with pytest.raises(ConfigError, match="'fooBar'"):
        run_init(dirs)
    assert target.read_text() == "previous\n"
    assert os.listdir(target.parent) == ["conf.yaml"]


def test_inputs_conf_syntax_error_names_line(dirs):
    (dirs[1] / "conf.yaml").write_text("listenPort: 5000\nips:\n  allow: [1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d"):
        run_init(dirs)


def test_missing_gateway_root_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="has no root/ directory"):
        init.run(gateway_dir=tmp_path, inputs_dir=tmp_path, environ={})


def test_pem_pair_is_installed_and_wired(dirs):
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (dirs[1] / "cert.pem").write_bytes(cert_pem)
    (dirs[1] / "key.pem").write_bytes(key_pem)
    agent_env = dirs[0] / "agent.env"
    run_init(dirs, agent_env=agent_env)
    root = dirs[0] / "root"
    conf = written_conf(dirs)
    assert conf["sslCert"] == certs.KEYSTORE_NAME
    keystore = (root / certs.KEYSTORE_NAME).read_bytes()
    key, cert, _ = pkcs12.load_key_and_certificates(keystore, conf["sslPwd"].encode())
    assert key is not None
    assert (root / certs.AGENT_CA_NAME).read_bytes() == cert_pem
    ca_line = f"export IBEAM_GATEWAY_CA_CERT={root / certs.AGENT_CA_NAME}\n"
    assert ca_line in agent_env.read_text()
    assert stat.S_IMODE((root / "conf.yaml").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / certs.KEYSTORE_NAME).stat().st_mode) == 0o600


def test_pem_pair_is_wired_into_inputs_conf(dirs):
    (dirs[1] / "conf.yaml").write_text(INPUTS_CONF)
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (dirs[1] / "cert.pem").write_bytes(cert_pem)
    (dirs[1] / "key.pem").write_bytes(key_pem)
    run_init(dirs)
    conf = written_conf(dirs)
    assert conf["sslCert"] == certs.KEYSTORE_NAME
    assert conf["sslPwd"] != "mywebapi"
    assert conf["listenPort"] == 5055


def test_certificate_must_cover_base_url_host(dirs):
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (dirs[1] / "cert.pem").write_bytes(cert_pem)
    (dirs[1] / "key.pem").write_bytes(key_pem)
    with pytest.raises(ConfigError, match="not gw.example.com"):
        run_init(dirs, {"IBEAM_GATEWAY_BASE_URL": "https://gw.example.com"})


def test_certificates_with_tls_off_are_refused(dirs):
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (dirs[1] / "cert.pem").write_bytes(cert_pem)
    (dirs[1] / "key.pem").write_bytes(key_pem)
    with pytest.raises(ConfigError, match="turn TLS on"):
        run_init(dirs, {"IBEAM_GATEWAY_TLS": "false"})


def test_explicit_agent_ca_is_kept(dirs):
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (dirs[1] / "cert.pem").write_bytes(cert_pem)
    (dirs[1] / "key.pem").write_bytes(key_pem)
    agent_env = dirs[0] / "agent.env"
    run_init(dirs, {"IBEAM_GATEWAY_CA_CERT": "/mine.pem"}, agent_env=agent_env)
    assert "IBEAM_GATEWAY_CA_CERT" not in agent_env.read_text()


def test_base_url_port_must_match_listen_port(dirs):
    with pytest.raises(ConfigError, match="uses port 5001 but conf.yaml"):
        run_init(dirs, {"IBEAM_GATEWAY_BASE_URL": "https://localhost:5001"})


def test_keystore_password_file_twin_is_read(dirs, tmp_path):
    (dirs[1] / "conf.yaml").write_text(INPUTS_CONF.replace('sslPwd: "mywebapi"\n', ""))
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    keystore = pkcs12.serialize_key_and_certificates(
        name=b"localhost",
        key=serialization.load_pem_private_key(key_pem, password=None),
        cert=x509.load_pem_x509_certificate(cert_pem),
        cas=None,
        encryption_algorithm=serialization.BestAvailableEncryption(b"store pass"),
    )
    (dirs[1] / "cacert.jks").write_bytes(keystore)
    (dirs[1] / "cacert.pem").write_bytes(cert_pem)
    secret = tmp_path / "ks-password"
    secret.write_text("store pass\n")
    run_init(dirs, {"IBEAM_KEYSTORE_PASSWORD_FILE": str(secret)})
    conf = written_conf(dirs)
    assert (conf["sslCert"], conf["sslPwd"]) == ("cacert.jks", "store pass")
    assert (dirs[0] / "root" / "cacert.jks").read_bytes() == keystore


def test_secret_and_file_twin_together_are_refused(tmp_path):
    environ = {"IBEAM_KEYSTORE_PASSWORD": "a", "IBEAM_KEYSTORE_PASSWORD_FILE": "/x"}
    with pytest.raises(ConfigError, match="both set"):
        init.read_secret(environ, "IBEAM_KEYSTORE_PASSWORD")


def test_printed_conf_hides_keystore_password(dirs, capsys):
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (dirs[1] / "cert.pem").write_bytes(cert_pem)
    (dirs[1] / "key.pem").write_bytes(key_pem)
    run_init(dirs)
    password = written_conf(dirs)["sslPwd"]
    out = capsys.readouterr().out
    assert 'sslPwd: "********"' in out
    assert "listenPort: 5000" in out
    assert password not in out


def test_write_atomic_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "conf.yaml"
    target.write_text("old\n")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(init.os, "replace", fail)
    with pytest.raises(OSError):
        init.write_atomic(target, b"new\n", mode=0o600)
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["conf.yaml"]


def test_main_prints_one_line_and_exits_2(dirs, monkeypatch, capsys):
    monkeypatch.setenv("IBEAM_GATEWAY_PORT", "nope")
    status = init.main(["--gateway-dir", str(dirs[0]), "--inputs-dir", str(dirs[1])])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("ConfigError: IBEAM_GATEWAY_PORT must be a port number")


def test_main_succeeds_with_defaults(dirs, monkeypatch):
    for name in list(os.environ):
        if name.startswith("IBEAM_"):
            monkeypatch.delenv(name)
    status = init.main(["--gateway-dir", str(dirs[0]), "--inputs-dir", str(dirs[1])])
    assert status == 0
    assert written_conf(dirs)["listenPort"] == 5000


AGENT_ENV = {"IBEAM_ACCOUNT": "agent-user", "IBEAM_PASSWORD": "agent-pw-1"}


def test_check_agent_refuses_an_agent_setting_before_writing(dirs):
    environ = {**AGENT_ENV, "IBEAM_MAINTENANCE_INTERVAL": "abc"}
    with pytest.raises(ConfigError, match="IBEAM_MAINTENANCE_INTERVAL must be"):
        init.run(
            gateway_dir=dirs[0], inputs_dir=dirs[1], environ=environ, check_agent=True
        )
    assert list((dirs[0] / "root").iterdir()) == []
    run_init(dirs, environ)  # without the check, the gateway's part passes


def test_check_agent_refuses_missing_or_unreadable_credentials(dirs, tmp_path):
    cases = [
        ({"IBEAM_PASSWORD": "pw"}, MissingCredentialError, "IBEAM_ACCOUNT is not set"),
        (
            {**AGENT_ENV, "IBEAM_PASSWORD": None, "IBEAM_PASSWORD_FILE": "/nope"},
            ConfigError,
            "IBEAM_PASSWORD_FILE names '/nope'",
        ),
        ({**AGENT_ENV, "IBEAM_KEY": "k" * 44}, ConfigError, "IBEAM_KEY is not"),
    ]
    for environ, error, words in cases:
        environ = {k: v for k, v in environ.items() if v is not None}
        with pytest.raises(error, match=words):
            init.check_agent_input(
                init.make_plan(inputs_dir=dirs[1], environ={}), environ=environ
            )


def test_check_agent_never_shows_an_fs_source_value(dirs, monkeypatch, capsys):
    for name in [k for k in os.environ if k.startswith("IBEAM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("IBEAM_SECRETS_SOURCE", "fs")
    monkeypatch.setenv("IBEAM_ACCOUNT", os.devnull)
    monkeypatch.setenv("IBEAM_PASSWORD", "Very$ecretPw")
    status = init.main(
        ["--check-agent", "--gateway-dir", str(dirs[0]), "--inputs-dir", str(dirs[1])]
    )
    out = capsys.readouterr()
    assert status == 2
    assert out.err.startswith("ConfigError: IBEAM_ACCOUNT names an empty file")
    monkeypatch.setenv("IBEAM_ACCOUNT", str(dirs[1]))  # a directory: unreadable
    status = init.main(
        ["--check-agent", "--gateway-dir", str(dirs[0]), "--inputs-dir", str(dirs[1])]
    )
    out = capsys.readouterr()
    assert status == 2
    assert out.err.startswith("ConfigError: IBEAM_ACCOUNT must hold the path")
    assert str(dirs[1]) not in out.err
    account = dirs[1].parent / "account"
    account.write_text("someone\n")
    monkeypatch.setenv("IBEAM_ACCOUNT", str(account))
    status = init.main(
        ["--check-agent", "--gateway-dir", str(dirs[0]), "--inputs-dir", str(dirs[1])]
    )
    out = capsys.readouterr()
    assert status == 2
    assert out.err.startswith("ConfigError: IBEAM_PASSWORD must hold the path")
    assert "Very$ecretPw" not in out.out + out.err
    assert not (dirs[0] / "root" / "conf.yaml").exists()


def test_check_agent_takes_the_url_from_the_planned_conf(dirs):
    """A malformed old root/conf.yaml (being replaced) does not stop the check."""
    (dirs[0] / "root" / "conf.yaml").write_text("listenPort: [5000\n")
    (dirs[1] / "conf.yaml").write_text(INPUTS_CONF)
    plan = init.make_plan(inputs_dir=dirs[1], environ={})
    assert init.planned_base_url(plan) == "https://localhost:5055"
    environ = {**AGENT_ENV, "IBEAM_SUPERVISOR_URL": "not a url"}
    init.run(gateway_dir=dirs[0], inputs_dir=dirs[1], environ=environ, check_agent=True)
    assert written_conf(dirs)["listenPort"] == 5055


def test_check_agent_accepts_the_ca_file_it_is_about_to_write(dirs):
    cert_pem, key_pem = certs.make_self_signed(["localhost"])
    (dirs[1] / "cert.pem").write_bytes(cert_pem)
    (dirs[1] / "key.pem").write_bytes(key_pem)
    environ = {**AGENT_ENV, "IBEAM_GATEWAY_TLS": "true"}
    init.run(gateway_dir=dirs[0], inputs_dir=dirs[1], environ=environ, check_agent=True)
    assert (dirs[0] / "root" / certs.AGENT_CA_NAME).read_bytes() == cert_pem


def test_main_check_agent_prints_one_line_and_exits_2(dirs, monkeypatch, capsys):
    for name in [k for k in os.environ if k.startswith("IBEAM_")]:
        monkeypatch.delenv(name)
    for name, value in AGENT_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IBEAM_TRADING_MODE", "demo")
    argv = ["--gateway-dir", str(dirs[0]), "--inputs-dir", str(dirs[1])]
    status = init.main(["--check-agent", *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("ConfigError: IBEAM_TRADING_MODE must be one of live, paper")
    assert not (dirs[0] / "root" / "conf.yaml").exists()
    monkeypatch.delenv("IBEAM_TRADING_MODE")
    assert init.main(["--check-agent", *argv]) == 0


def test_main_unreadable_input_names_the_uid(dirs, monkeypatch, capsys):
    """An inputs conf.yaml or key the appliance's user may not read: one line
    naming the uid and the fix, exit 2 (not a traceback or 'init: [Errno 13]')."""
    for name in [k for k in os.environ if k.startswith("IBEAM_")]:
        monkeypatch.delenv(name)
    (dirs[1] / "conf.yaml").write_text(INPUTS_CONF)
    real = certs.Path.read_bytes

    def read_bytes(self):
        if self.name == "conf.yaml" and self.parent == dirs[1]:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(certs.Path, "read_bytes", read_bytes)
    argv = ["--gateway-dir", str(dirs[0]), "--inputs-dir", str(dirs[1])]
    assert init.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"ConfigError: {dirs[1] / 'conf.yaml'} is not readable by uid {os.geteuid()}"
    )
    assert not (dirs[0] / "root" / "conf.yaml").exists()
