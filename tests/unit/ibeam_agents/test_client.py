"""Status parsing of every gateway answer shape, and the paced HTTP client."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from ibeam_agents.client import GatewayApi, Routes, StatusKind, parse_status

K = StatusKind

TICKLE_AUTHENTICATED = {
    "session": "bb665d0f55b6289d70bc7380089fc96f",
    "ssoExpires": 460311,
    "collission": False,
    "userId": 123456789,
    "hmds": {"error": "no bridge"},
    "iserver": {
        "authStatus": {
            "authenticated": True,
            "competing": False,
            "connected": True,
            "message": "",
            "MAC": "98:F2:B3:23:BF:A0",
            "serverInfo": {
                "serverName": "JifN19053",
                "serverVersion": "Build 10.25.0p, Dec 5, 2023 5:48:12 PM",
            },
        }
    },
}

AUTH_STATUS_AUTHENTICATED = {
    "authenticated": True,
    "competing": False,
    "connected": True,
    "message": "",
    "MAC": "98:F2:B3:23:BF:A0",
    "serverInfo": {"serverName": "JifN19053", "serverVersion": "Build 10.25.0p"},
    "hardware_info": "3b0679ee|98:A2:B3:23:BC:A0",
    "fail": "",
}


def _tickle(**auth) -> dict:
    body = json.loads(json.dumps(TICKLE_AUTHENTICATED))
    body["iserver"]["authStatus"].update(auth)
    return body


def _parse(status: int, body) -> object:
    if isinstance(body, dict | list):
        body = json.dumps(body)
    return parse_status(status, body)


# -- parse_status: one test per shape of the reference -----------------------


def test_parse_tickle_authenticated_reads_every_field():
    status = _parse(200, TICKLE_AUTHENTICATED)
    assert status.kind is K.AUTHENTICATED
    assert status.session and status.authenticated and status.connected
    assert status.sso_expires_ms == 460311
    assert status.server_name == "JifN19053"
    assert not status.collision and not status.competing
    assert status.ready


def test_parse_auth_status_authenticated():
    assert _parse(200, AUTH_STATUS_AUTHENTICATED).kind is K.AUTHENTICATED


@pytest.mark.parametrize("status", [401])
@pytest.mark.parametrize("body", ["", None, "Unauthorized", b"\xff\xfe"])
def test_parse_401_means_no_session(status, body):
    assert parse_status(status, body).kind is K.NO_SESSION


def test_parse_no_session_body_with_200():
    assert _parse(200, {"error": "no session"}).kind is K.NO_SESSION


def test_parse_not_logged_in_before_any_login():
    assert _parse(200, {"error": "not logged in"}).kind is K.NO_SESSION


def test_parse_state_c_auth_status_not_authenticated():
    body = {
        "authenticated": False,
        "competing": False,
        "connected": False,
        "MAC": "98:B2:C3:45:DE:F6",
    }
    status = _parse(200, body)
    assert status.kind is K.NOT_AUTHENTICATED
    assert status.session


def test_parse_tickle_lost_brokerage_session_s01():
    status = _parse(200, _tickle(authenticated=False, connected=True))
    assert status.kind is K.NOT_AUTHENTICATED
    assert status.connected is True


def test_parse_tickle_without_iserver_block():
    body = {"session": "x" * 32, "ssoExpires": 1000, "collission": False, "userId": 1}
    status = _parse(200, body)
    assert status.kind is K.NOT_AUTHENTICATED
    assert status.session


def test_parse_tickle_with_iserver_error_block():
    body = {"session": "x", "ssoExpires": 10, "iserver": {"error": "no bridge"}}
    status = _parse(200, body)
    assert status.kind is K.NOT_AUTHENTICATED
    assert "no bridge" in status.message


def test_parse_failure_variant_keeps_fail_text():
    body = {
        "authenticated": False,
        "competing": False,
        "connected": True,
        "message": "",
        "serverInfo": {"serverName": None, "serverVersion": None},
        "fail": "Force compete capability must be used together with compete flag",
    }
    status = _parse(200, body)
    assert status.kind is K.NOT_AUTHENTICATED
    assert status.fail.startswith("Force compete")
    assert status.server_name is None


def test_parse_competing_beats_authenticated():
    assert _parse(200, _tickle(competing=True)).kind is K.COMPETING
    body = {"authenticated": True, "competing": True, "connected": True}
    assert _parse(200, body).kind is K.COMPETING


def test_parse_authenticated_but_not_connected():
    assert _parse(200, _tickle(connected=False)).kind is K.NOT_CONNECTED


def test_parse_missing_connected_does_not_demote():
    assert _parse(200, {"authenticated": True}).kind is K.AUTHENTICATED


def test_parse_collision_spelling_is_read():
    body = _tickle()
    body["collission"] = True
    status = _parse(200, body)
    assert status.collision
    assert status.kind is K.AUTHENTICATED


def test_parse_string_booleans_and_odd_expiry():
    body = _tickle(authenticated="true", connected="true", competing="false")
    body["ssoExpires"] = "12345"
    status = _parse(200, body)
    assert status.kind is K.AUTHENTICATED
    assert status.sso_expires_ms == 12345
    body["ssoExpires"] = "soon"
    assert _parse(200, body).sso_expires_ms is None


def test_parse_access_denied_is_its_own_kind():
    status = parse_status(404, b"Access Denied")
    assert status.kind is K.ACCESS_DENIED


def test_parse_other_404_is_transient_not_access_denied():
    assert parse_status(404, "<html>not found</html>").kind is K.TRANSIENT


@pytest.mark.parametrize(
    "code,body",
    [(500, "Internal Server Error"), (503, "Service Unavailable"), (502, "")],
)
def test_parse_server_errors_are_transient(code, body):
    status = parse_status(code, body)
    assert status.kind is K.TRANSIENT
    assert status.http_status == code


def test_parse_429_is_rate_limited_with_retry_after():
    status = parse_status(429, "", retry_after=30.0)
    assert status.kind is K.RATE_LIMITED
    assert status.retry_after == 30.0


@pytest.mark.parametrize(
    "body",
    ["<html>maintenance</html>", "[1, 2]", "42", "{}", '{"foo": 1}', "{bad json"],
)
def test_parse_unreadable_200_is_transient_never_raises(body):
    assert parse_status(200, body).kind is K.TRANSIENT


def test_parse_deeply_nested_body_never_raises():
    body = "[" * 100000 + "]" * 100000
    assert parse_status(200, body).kind is K.TRANSIENT


def test_parse_ssodh_init_answer_is_a_status():
    body = {"authenticated": True, "connected": True, "competing": False}
    assert _parse(200, body).kind is K.AUTHENTICATED
    assert _parse(200, {"wait": True}).kind is K.TRANSIENT


def test_status_as_dict_has_no_ids():
    text = json.dumps(_parse(200, TICKLE_AUTHENTICATED).as_dict())
    assert "bb665d0f" not in text
    assert "123456789" not in text
    assert "98:F2" not in text


# -- GatewayApi ---------------------------------------------------------------


class FakeResponse:
    def __init__(self, status: int, body=b"", headers=None):
        self.status_code = status
        self.content = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.headers = headers or {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeSession:
    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []
        self.headers = {}
        self.closed = False

    def request(self, method, url, **kwargs):
        self.calls.append((method, url, kwargs))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self):
        self.closed = True


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def _api(replies, **kwargs):
    clock = FakeClock()
    session = FakeSession(replies)
    api = GatewayApi(
        "https://localhost:5000/",
        timeout=7.0,
        session=session,
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )
    return api, session, clock


def test_api_every_call_has_a_timeout_and_verify_setting():
    api, session, _ = _api([FakeResponse(200, TICKLE_AUTHENTICATED)] * 6, verify="/ca")
    api.tickle()
    api.auth_status()
    api.validate()
    api.reauthenticate()
    api.logout()
    api.user()
    for _, _, kwargs in session.calls:
        assert kwargs["timeout"] == (7.0, 7.0)
        assert kwargs["verify"] == "/ca"
        assert kwargs["allow_redirects"] is False


def test_api_uses_configured_routes():
    routes = Routes(tickle="/x/tickle")
    api, session, _ = _api([FakeResponse(200, TICKLE_AUTHENTICATED)], routes=routes)
    api.tickle()
    method, url, _ = session.calls[0]
    assert (method, url) == ("POST", "https://localhost:5000/x/tickle")


def test_api_tickle_never_more_than_once_a_second():
    api, _, clock = _api([FakeResponse(200, TICKLE_AUTHENTICATED)] * 2)
    api.tickle()
    api.tickle()
    assert clock.sleeps and sum(clock.sleeps) == pytest.approx(1.0)


def test_api_spaces_requests_overall():
    api, _, clock = _api([FakeResponse(200, AUTH_STATUS_AUTHENTICATED)] * 3)
    for _ in range(3):
        api.auth_status()
    assert sum(clock.sleeps) == pytest.approx(0.2)


def test_api_validate_at_most_once_a_minute():
    ok = {"RESULT": True, "EXPIRES": 415890, "LOGIN_TYPE": 2, "USER_ID": 1}
    api, session, clock = _api([FakeResponse(200, ok), FakeResponse(200, ok)])
    first = api.validate()
    assert first.ok and first.expires_ms == 415890 and first.paper is True
    clock.now += 30
    assert api.validate() is None
    clock.now += 31
    assert api.validate().ok
    assert len(session.calls) == 2


def test_api_validate_false_result():
    api, _, _ = _api([FakeResponse(200, {"RESULT": False})])
    assert api.validate().ok is False
    api, _, _ = _api([FakeResponse(401, b"")])
    assert api.validate().ok is False


def test_api_429_holds_further_calls_but_not_logout():
    replies = [
        FakeResponse(429, b"", {"Retry-After": "20"}),
        FakeResponse(200, {"status": True}),
    ]
    api, session, clock = _api(replies)
    assert api.tickle().kind is K.RATE_LIMITED
    clock.now += 2
    held = api.auth_status()
    assert held.kind is K.RATE_LIMITED and len(session.calls) == 1
    assert api.logout() is True
    assert len(session.calls) == 2


def test_api_429_hold_ends():
    replies = [FakeResponse(429, b""), FakeResponse(200, AUTH_STATUS_AUTHENTICATED)]
    api, session, clock = _api(replies)
    api.auth_status()
    clock.now += 61
    assert api.auth_status().kind is K.AUTHENTICATED


@pytest.mark.parametrize(
    "error,kind",
    [
        (requests.ConnectionError("[Errno 111] Connection refused"), K.NOT_RUNNING),
        (requests.ConnectionError("NewConnectionError: failed"), K.NOT_RUNNING),
        (requests.ConnectionError("RemoteDisconnected('closed')"), K.UNREACHABLE),
        (requests.ReadTimeout("read timed out"), K.UNREACHABLE),
        (requests.ConnectTimeout("connect timed out"), K.UNREACHABLE),
        (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), K.TLS_ERROR),
        (requests.exceptions.SSLError("EOF occurred in violation"), K.UNREACHABLE),
        (requests.exceptions.ChunkedEncodingError("broken"), K.UNREACHABLE),
    ],
)
def test_api_transport_errors_are_classed(error, kind):
    api, _, _ = _api([error])
    assert api.auth_status().kind is kind


def test_api_transport_error_on_other_calls_is_quiet():
    api, _, _ = _api([requests.ReadTimeout("x")] * 5)
    assert api.logout() is False
    assert api.reauthenticate() is False
    assert api.user() is None
    assert api.validate().ok is False
    assert api.init_session().kind is K.UNREACHABLE


def test_api_reauthenticate_and_logout_answers():
    replies = [
        FakeResponse(200, {"message": "triggered"}),
        FakeResponse(200, {"error": "not logged in"}),
        FakeResponse(200, {"status": True}),
        FakeResponse(200, {"confirmed": True}),
    ]
    api, _, _ = _api(replies)
    assert api.reauthenticate() is True
    assert api.reauthenticate() is False
    assert api.logout() is True
    assert api.logout() is False


def test_api_init_session_sends_compete_and_publish():
    api, session, _ = _api([FakeResponse(200, AUTH_STATUS_AUTHENTICATED)])
    assert api.init_session(compete=True).kind is K.AUTHENTICATED
    assert session.calls[0][2]["json"] == {"publish": True, "compete": True}


def test_api_user_returns_json_only_with_a_session():
    api, _, _ = _api([FakeResponse(200, {"username": "demo"}), FakeResponse(401, b"")])
    assert api.user() == {"username": "demo"}
    assert api.user() is None


def test_api_logs_one_debug_line_per_request(caplog):
    api, _, _ = _api([FakeResponse(200, TICKLE_AUTHENTICATED)])
    with caplog.at_level(logging.DEBUG, logger="ibeam_agents.client"):
        api.tickle()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [lines[0]]
    assert lines[0].startswith("POST /v1/api/tickle -> 200")


def test_api_close_closes_the_session():
    api, session, _ = _api([])
    with api:
        pass
    assert session.closed
