"""Health server routes against a fake watcher (a thread, no process)."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from ibeam_agents.errors import ConfigError
from ibeam_agents.health import start_health_server
from ibeam_agents.metrics import Metrics


class FakeSource:
    def __init__(self):
        self.snap = {"state": "READY", "live": True, "ready": True}
        self.commands = []
        self.metrics = Metrics(["READY", "DEGRADED"], ["AUTHENTICATED"])
        self.fail = False
        self.block = threading.Event()

    def snapshot(self):
        if self.fail:
            raise RuntimeError("boom")
        return dict(self.snap)

    def command(self, name):
        self.commands.append(name)

    def metrics_text(self):
        return self.metrics.render()


@pytest.fixture
def served():
    source = FakeSource()
    server, thread = start_health_server("127.0.0.1", 0, source)
    port = server.server_address[1]

    def call(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(method, path, body=body)
            reply = conn.getresponse()
            return reply.status, reply.getheader("Content-Type"), reply.read()
        finally:
            conn.close()

    yield source, call
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_health_livez_and_readyz_follow_the_snapshot(served):
    source, call = served
    assert call("GET", "/livez")[0] == 200
    assert call("GET", "/readyz")[0] == 200
    source.snap.update(ready=False, ready_reason="not ready: DEGRADED")
    status, _, body = call("GET", "/readyz")
    assert status == 503 and b"DEGRADED" in body
    source.snap.update(live=False)
    assert call("GET", "/livez")[0] == 503


def test_health_status_is_json(served):
    source, call = served
    status, ctype, body = call("GET", "/status")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body)["state"] == "READY"


def test_health_metrics_are_prometheus_text(served):
    _, call = served
    status, ctype, body = call("GET", "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=")
    assert b"ibeam_watcher_state" in body


def test_health_post_routes_queue_commands(served):
    source, call = served
    assert call("POST", "/activate", body=b"{}")[0] == 202
    assert call("POST", "/deactivate")[0] == 202
    assert source.commands == ["activate", "deactivate"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/activate"),
        ("GET", "/deactivate"),
        ("POST", "/livez"),
        ("PUT", "/status"),
        ("DELETE", "/readyz"),
    ],
)
def test_health_wrong_method_is_405(served, method, path):
    source, call = served
    assert call(method, path)[0] == 405
    assert source.commands == []


def test_health_unknown_route_is_404(served):
    assert served[1]("GET", "/nope")[0] == 404


def test_health_head_has_no_body(served):
    status, _, body = served[1]("HEAD", "/livez")
    assert status == 200 and body == b""


def test_health_never_throws_to_the_client(served):
    source, call = served
    source.fail = True
    assert call("GET", "/status")[0] == 500
    source.fail = False
    assert call("GET", "/status")[0] == 200


def test_health_is_quiet_in_the_log(served, caplog):
    for _ in range(3):
        served[1]("GET", "/livez")
    assert not [r for r in caplog.records if "/livez" in r.getMessage()]


def test_health_port_in_use_is_a_config_error():
    source = FakeSource()
    server, thread = start_health_server("127.0.0.1", 0, source)
    try:
        with pytest.raises(ConfigError, match="IBEAM_HEALTH_SERVER_PORT"):
            start_health_server("127.0.0.1", server.server_address[1], source)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_health_thread_is_a_daemon(served):
    assert any(t.name == "health-server" and t.daemon for t in threading.enumerate())
