"""The simulator's HTTP surface and session states A-E, with a plain HTTPS client."""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.e2e

FAST = {"auth_delay_ms": 300}
LOGIN = "/sso/Login?forwardTo=22&RL=1&ip2loc=US"


def logged_in(sim_factory, **options):
    """A simulator whose demo user has logged in and is authenticated."""
    gw = sim_factory(faults={**FAST, **options.pop("faults", {})}, **options)
    assert gw.http_login() == "Client login succeeds"
    gw.wait_for(lambda s: s["authenticated"])
    return gw


def test_root_redirects_to_login_page(sim):
    response = sim.request("GET", "/")
    assert response.status_code == 302
    assert response.headers["Location"] == LOGIN
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.content == b""


def test_clear_answers_cleared(sim):
    response = sim.request("GET", "/clear")
    assert (response.status_code, response.text) == (200, "cleared")
    assert response.headers["Content-Length"] == "7"


def test_status_route_never_answers(sim):
    with pytest.raises(requests.ReadTimeout):
        sim.request("GET", "/status", timeout=1.5)
    assert sim.request("GET", "/clear").status_code == 200


def test_unknown_service_and_catch_all(sim):
    response = sim.request("GET", "/v1/am/anything")
    assert (response.status_code, response.text) == (200, "Unknown service am")
    response = sim.request("GET", "/foo/bar")
    assert response.status_code == 302
    assert response.headers["Location"] == "https://api.ibkr.com/foo/bar"


def test_cors_preflight_answers_204(sim):
    headers = {"Origin": "http://example", "Access-Control-Request-Method": "POST"}
    response = sim.request("OPTIONS", "/v1/api/tickle", headers=headers)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert (
        response.headers["Access-Control-Allow-Methods"]
        == "POST,GET,OPTIONS,DELETE,PUT"
    )


def test_state_a_everything_401_before_login(sim):
    for method, route in [
        ("POST", "/v1/api/tickle"),
        ("GET", "/v1/api/tickle"),
        ("POST", "/v1/api/iserver/auth/status"),
        ("GET", "/v1/portal/sso/validate"),
        ("GET", "/v1/api/one/user"),
        ("GET", "/v1/api/iserver/accounts"),
        ("GET", "/v1/api/portfolio/accounts"),
        ("POST", "/v1/api/logout"),
    ]:
        assert sim.request(method, route).status_code == 401, route
    for route in (
        "/v1/api/iserver/reauthenticate",
        "/v1/portal/iserver/reauthenticate",
    ):
        response = sim.request("POST", route + "?force=true")
        assert response.json() == {"error": "not logged in"}
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"


def test_login_leads_to_state_c_then_b(sim_factory):
    gw = sim_factory(faults={"auth_delay_ms": 1500})
    gw.http_login()
    tickle = gw.request("POST", "/v1/api/tickle").json()
    assert tickle["iserver"]["authStatus"] == {
        "authenticated": False,
        "competing": False,
        "connected": False,
        "MAC": "98:F2:B3:23:BF:A0",
    }
    gw.wait_for(lambda s: s["authenticated"])
    tickle = gw.request("POST", "/v1/api/tickle").json()
    assert set(tickle) == {
        "session",
        "ssoExpires",
        "collission",
        "userId",
        "hmds",
        "iserver",
    }
    assert tickle["collission"] is False
    assert tickle["hmds"] == {"error": "no bridge"}
    status = tickle["iserver"]["authStatus"]
    assert (status["authenticated"], status["competing"], status["connected"]) == (
        True,
        False,
        True,
    )
    assert set(status["serverInfo"]) == {"serverName", "serverVersion"}


def test_sso_expires_counts_down_and_validate_renews(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False, "sso_ttl_s": 60})
    first = gw.request("POST", "/v1/api/tickle").json()["ssoExpires"]
    time.sleep(1.2)
    second = gw.request("POST", "/v1/api/tickle").json()["ssoExpires"]
    assert 0 < second < first <= 60000
    validate = gw.request("GET", "/v1/portal/sso/validate").json()
    assert validate["RESULT"] is True
    assert validate["USER_NAME"] == "demo"
    assert validate["LOGIN_TYPE"] == 1
    assert validate["EXPIRES"] > second


def test_auth_status_and_data_routes_when_authenticated(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False})
    status = gw.request("POST", "/v1/api/iserver/auth/status").json()
    assert status["authenticated"] is True
    assert status["fail"] == ""
    assert "hardware_info" in status
    accounts = gw.request("GET", "/v1/api/iserver/accounts").json()
    assert accounts["accounts"] == ["U1234567"]
    assert accounts["selectedAccount"] == "U1234567"
    assert gw.request("GET", "/v1/api/portfolio/accounts").json()[0]["id"] == "U1234567"
    assert gw.request("GET", "/v1/api/one/user").json()["username"] == "demo"


def test_logout_then_reauthenticate_restores_session(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False})
    response = gw.request("POST", "/v1/api/logout")
    assert response.text == '{"status":true}'
    state = gw.state()
    assert (state["sso"], state["authenticated"], state["connected"]) == (
        True,
        False,
        False,
    )
    accounts = gw.request("GET", "/v1/api/iserver/accounts")
    assert accounts.status_code == 400
    assert accounts.json() == {"error": "Init session first", "statusCode": 400}
    validate = gw.request("GET", "/v1/api/sso/validate").json()
    assert validate["RESULT"] is True
    response = gw.request("POST", "/v1/portal/iserver/reauthenticate?force=true")
    assert response.json() == {"message": "triggered"}
    assert gw.wait_for(lambda s: s["authenticated"])["reauthentications"] == 1


def test_competing_session_and_its_recovery(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False})
    gw.compete()
    status = gw.request("POST", "/v1/api/tickle").json()["iserver"]["authStatus"]
    assert (status["authenticated"], status["competing"], status["connected"]) == (
        True,
        True,
        True,
    )
    assert gw.request("GET", "/v1/api/iserver/accounts").json() == {}
    body = {"publish": True, "compete": True}
    init = gw.request("POST", "/v1/api/iserver/auth/ssodh/init", json=body).json()
    assert (init["authenticated"], init["competing"]) == (True, False)


def test_dropped_session_is_fixed_by_reauthenticate(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False})
    gw.drop()
    status = gw.request("POST", "/v1/api/iserver/auth/status").json()
    assert (status["authenticated"], status["connected"]) == (False, True)
    gw.request("POST", "/v1/api/iserver/reauthenticate")
    gw.wait_for(lambda s: s["authenticated"])


def test_expired_no_session_style(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False})
    gw.expire(style="no_session")
    tickle = gw.request("POST", "/v1/api/tickle")
    assert (tickle.status_code, tickle.text) == (200, '{"error":"no session"}')
    assert gw.request("POST", "/v1/api/iserver/auth/status").status_code == 401
    assert gw.request("GET", "/v1/portal/sso/validate").status_code == 401
    reauth = gw.request("POST", "/v1/api/iserver/reauthenticate").json()
    assert reauth == {"message": "triggered"}
    time.sleep(0.6)
    assert gw.state()["sso"] is False


def test_expired_401_style(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False})
    gw.expire(style="401")
    assert gw.request("POST", "/v1/api/tickle").status_code == 401
    gw.http_login()
    gw.wait_for(lambda s: s["authenticated"])
    assert gw.state()["login_successes"] == 2


def test_ssodh_init_authenticates_after_logout(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False})
    gw.request("POST", "/v1/api/logout")
    init = gw.request("POST", "/v1/api/iserver/auth/ssodh/init")
    assert init.status_code == 200
    assert init.json()["authenticated"] is True
    assert gw.state()["ssodh_inits"] == 1
    refused = gw.request(
        "POST", "/v1/api/iserver/auth/ssodh/init", json={"publish": False}
    )
    assert refused.status_code == 500


def test_paper_login_reports_paper_mode(sim_factory):
    paper = {"user": "paper1", "password": "pw", "mode": "paper", "account_id": "DU111"}
    gw = sim_factory(accounts=[paper], faults=FAST)
    gw.http_login("paper1", "pw", paper=True)
    state = gw.wait_for(lambda s: s["authenticated"])
    assert (state["mode"], state["user"]) == ("paper", "paper1")
    assert gw.request("GET", "/v1/api/sso/validate").json()["LOGIN_TYPE"] == 2
    assert gw.request("GET", "/v1/api/iserver/accounts").json()["isPaper"] is True


def test_requests_counted_per_route(sim):
    sim.request("POST", "/v1/api/tickle")
    sim.request("POST", "/v1/api/tickle")
    assert sim.state()["requests"]["/v1/api/tickle"] == 2


def test_ten_concurrent_clients_are_served(sim_factory):
    gw = logged_in(sim_factory, faults={"pacing": False})
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    start = threading.Barrier(10)

    def client(_: int) -> list[int]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", gw.port, context=context, timeout=30
        )
        start.wait(30)
        codes = []
        for _ in range(5):
            connection.request("POST", "/v1/api/tickle")
            response = connection.getresponse()
            response.read()
            codes.append(response.status)
        connection.close()
        return codes

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(client, range(10)))
    assert results == [[200] * 5] * 10
