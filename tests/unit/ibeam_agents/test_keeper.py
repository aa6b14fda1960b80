"""GatewayClient, the library façade: built from explicit arguments."""

from __future__ import annotations

import pytest

from ibeam_agents import GatewayClient, logs
from ibeam_agents.credentials import Credentials
from ibeam_agents.gateway import StandaloneGateway, SupervisorGateway
from ibeam_agents.settings import Settings


@pytest.fixture(autouse=True)
def _forget():
    yield
    logs.forget_secrets()


def _gateway_dir(tmp_path, port):
    root = tmp_path / "gw" / "root"
    root.mkdir(parents=True)
    (root / "conf.yaml").write_text(f"listenPort: {port}\n")
    return tmp_path / "gw"


def test_client_takes_paths_and_credentials_explicitly(tmp_path, monkeypatch):
    monkeypatch.setenv("IBEAM_MAINTENANCE_INTERVAL", "999")  # ignored by design
    client = GatewayClient(
        Credentials("libuser", "lib-password"),
        gateway_dir=_gateway_dir(tmp_path, 5055),
        outputs_dir=tmp_path / "out",
        maintenance_interval=5,
    )
    try:
        assert client.settings.base_url == "https://localhost:5055"
        assert client.settings.maintenance_interval == 5
        assert client.budget.path == tmp_path / "out" / "failure-budget.json"
        assert isinstance(client.gateway, StandaloneGateway)
        assert "standalone" in client.describe()
        assert logs.redact("libuser lib-password") == "*** ***"
    finally:
        client.close()


def test_client_rederives_the_url_when_the_dir_changes(tmp_path):
    base = Settings(gateway_dir=tmp_path / "elsewhere")
    client = GatewayClient(
        settings=base, gateway_dir=_gateway_dir(tmp_path, 6001), outputs_dir=tmp_path
    )
    assert client.settings.base_url == "https://localhost:6001"
    client.close()


def test_client_under_supervisord(tmp_path):
    client = GatewayClient(
        gateway_dir=tmp_path,
        outputs_dir=tmp_path,
        supervisor_url="unix:///tmp/x.sock",
        base_url="https://localhost:7000",
    )
    assert isinstance(client.gateway, SupervisorGateway)
    assert client.gateway.port == 7000
    assert "supervisord" in client.describe()
    client.close()


def test_client_from_environment(tmp_path):
    env = {
        "IBEAM_GATEWAY_DIR": str(tmp_path),
        "IBEAM_OUTPUTS_DIR": str(tmp_path / "o"),
        "IBEAM_ACCOUNT": "envuser",
        "IBEAM_PASSWORD": "env-password",
        "IBEAM_MAINTENANCE_INTERVAL": "7",
    }
    client = GatewayClient.from_environment(env)
    assert client.credentials == Credentials("envuser", "env-password")
    assert client.settings.maintenance_interval == 7
    client.close()
    bare = GatewayClient.from_environment(env, with_credentials=False)
    assert bare.credentials is None
    bare.close()


def test_client_unknown_option_is_a_type_error(tmp_path):
    with pytest.raises(TypeError):
        GatewayClient(gateway_dir=tmp_path, outputs_dir=tmp_path, no_such_option=1)


class _FakeGateway:
    def __init__(self, owned: bool, answering: bool) -> None:
        self.owned = owned
        self._answering = answering

    def answering(self) -> bool:
        return self._answering


def _preflight_client(tmp_path, monkeypatch, gateway):
    from ibeam_agents import browser, login

    calls = []
    monkeypatch.setattr(
        login, "preflight_browser", lambda o, **kw: calls.append(kw) or "156.0"
    )
    monkeypatch.setattr(browser, "keystore_spki_hash", lambda d, u: f"pin-of-{d.name}")
    client = GatewayClient(
        Credentials("u", "p"),
        gateway_dir=_gateway_dir(tmp_path, 5077),
        outputs_dir=tmp_path / "out",
    )
    client.gateway = gateway
    return client, calls


@pytest.mark.parametrize(
    ("owned", "answering", "warm"),
    [(True, True, True), (False, False, True), (False, True, False)],
)
def test_preflight_warms_a_browser_only_for_a_fresh_gateway(
    tmp_path, monkeypatch, owned, answering, warm
):
    gateway = _FakeGateway(owned, answering)
    client, calls = _preflight_client(tmp_path, monkeypatch, gateway)
    assert client._preflight() == "156.0"
    expected = {"warm": True, "spki": "pin-of-gw"} if warm else {}
    assert calls == [expected]
    client.close()


def test_preflight_without_a_readable_keystore_starts_no_warm_browser(
    tmp_path, monkeypatch
):
    from ibeam_agents import browser

    client, calls = _preflight_client(tmp_path, monkeypatch, _FakeGateway(True, False))

    def unreadable(_dir, _url):
        raise ValueError("the keystore cannot be read")

    monkeypatch.setattr(browser, "keystore_spki_hash", unreadable)
    client._preflight()
    assert calls == [{}]
    client.close()


def test_client_close_closes_the_warm_browser(tmp_path, monkeypatch):
    from ibeam_agents import browser

    closed = []
    monkeypatch.setattr(browser, "close_warm_browser", lambda: closed.append(1))
    client = GatewayClient(
        gateway_dir=_gateway_dir(tmp_path, 5078), outputs_dir=tmp_path
    )
    client.close()
    assert closed == [1]
