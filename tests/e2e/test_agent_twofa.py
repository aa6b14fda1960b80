"""Second factor through the real login page: TOTP, SMS codes, IB Key push,
custom handlers and the method picker, against the simulator."""

from __future__ import annotations

import http.server
import logging
import sys
import textwrap
import threading
import time

import psutil
import pytest

from ibeam_agents.errors import (
    SecondFactorFailed,
    SecondFactorUnavailable,
)
from ibeam_agents.twofa import TwoFactorConfig
from tests.e2e.test_agent_login_kit import TOTP_SECRET, login, login_sim
from tests.support.procs import TOKEN_VAR

pytestmark = pytest.mark.e2e

sim = pytest.fixture(login_sim)


def totp(**extra) -> TwoFactorConfig:
    return TwoFactorConfig(handler="TOTP", totp_secret=TOTP_SECRET, **extra)


def test_twofa_totp_code_accepted(sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    result = login(sim, tmp_path, "totpuser", two_factor=totp())
    print(f"one login with TOTP took {time.monotonic() - started:.1f} s")
    assert result.second_factor == "TOTP"
    assert result.steps[-2:] == ("code_input", "success")
    assert sim.state()["codes_received"] == 1
    assert TOTP_SECRET not in caplog.text
    assert "second factor: TOTP code submitted" in caplog.text


def test_twofa_totp_strict_window_with_latency(sim, tmp_path):
    """S10: only the current step is accepted, checked seconds after it arrives."""
    sim.faults(totp_window_steps=0, totp_latency_ms=3000)
    result = login(sim, tmp_path, "totpuser", two_factor=totp())
    assert result.second_factor == "TOTP"
    state = sim.state()
    assert state["second_factor_failures"] == 0 and state["login_successes"] == 1


def test_twofa_totp_refused_twice_then_failed(sim, tmp_path):
    wrong = TwoFactorConfig(handler="TOTP", totp_secret="GEZDGNBVGY3TQOJQGEZDGNBV")
    with pytest.raises(SecondFactorFailed) as info:
        login(sim, tmp_path, "totpuser", two_factor=wrong)
    assert info.value.spends_budget
    state = sim.state()
    assert state["codes_received"] == 2  # one retry in the next step, no more
    assert state["second_factor_failures"] == 2 and state["login_attempts"] == 1


def _code_script(tmp_path, control_url: str) -> str:
    script = tmp_path / "sms-code.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import json, time, urllib.error, urllib.request
            for _ in range(100):
                try:
                    with urllib.request.urlopen("{control_url}/sim/2fa/last_code") as r:
                        print(json.load(r)["code"])
                        break
                except urllib.error.HTTPError:
                    time.sleep(0.1)
            """
        )
    )
    return f"{sys.executable} {script}"


def test_twofa_sms_code_from_command(sim, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    command = _code_script(tmp_path, sim.control_url)
    config = TwoFactorConfig(handler="COMMAND", command=command, request_timeout=30)
    result = login(sim, tmp_path, "smsuser", two_factor=config)
    assert result.second_factor == "COMMAND"
    state = sim.state()
    assert state["codes_sent"] == 1 and state["codes_received"] == 1
    assert sim.last_code() not in caplog.text


class _Relay:
    """An SMS relay: answers GET with the code the simulator last sent, as text."""

    def __init__(self, sim):
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests += 1
                if self.headers.get("Authorization") != "Bearer relay-token":
                    self.send_response(401)
                    self.end_headers()
                    return
                try:
                    body = sim.last_code().encode()
                    status = 200
                except Exception:
                    body, status = b"", 404
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/sms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_twofa_sms_code_from_http_endpoint(sim, tmp_path):
    relay = _Relay(sim)
    try:
        config = TwoFactorConfig(
            handler="EXTERNAL_REQUEST",
            request_url=relay.url,
            request_timeout=30,
            request_headers={"Authorization": "Bearer relay-token"},
        )
        result = login(sim, tmp_path, "smsuser", two_factor=config)
    finally:
        relay.close()
    assert result.second_factor == "EXTERNAL_REQUEST"
    assert relay.requests >= 1
    assert sim.state()["codes_received"] == 1


def _devtools_listeners() -> list[str]:
    """TCP listeners of the browser processes this test started."""
    import os

    token = os.environ[TOKEN_VAR]
    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if process.environ().get(TOKEN_VAR) != token:
                continue
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append(f"{process.info['name']} {conn.laddr}")
        except psutil.Error:
            continue
    return found


def _token_browsers() -> int:
    import os

    token = os.environ[TOKEN_VAR]
    count = 0
    for process in psutil.process_iter(["name"]):
        try:
            if (process.info["name"] or "").startswith("chrom") and (
                process.environ().get(TOKEN_VAR) == token
            ):
                count += 1
        except psutil.Error:
            continue
    return count


def test_twofa_push_approved_while_waiting(sim, tmp_path):
    events, listeners, browsers = [], [], []

    def notify(event, detail):
        events.append((event, detail))
        browsers.append(_token_browsers())
        listeners.extend(_devtools_listeners())
        threading.Timer(1.0, sim.approve_push).start()

    config = TwoFactorConfig(handler="IBKEY_PUSH", push_timeout=60)
    result = login(sim, tmp_path, "pushuser", two_factor=config, notify=notify)
    assert result.second_factor == "IBKEY_PUSH"
    assert [event for event, _ in events] == ["push_waiting"]
    assert "60" in events[0][1]
    assert browsers[0] > 0  # the check below looked at a live browser
    # chromedriver's own port aside, nothing of ours listens: no DevTools port.
    assert [line for line in listeners if not line.startswith("chromedriver")] == []
    assert sim.state()["pushes_sent"] == 1


def test_twofa_push_unapproved_times_out_without_resending(sim, tmp_path):
    config = TwoFactorConfig(handler="IBKEY_PUSH", push_timeout=5)
    with pytest.raises(SecondFactorFailed, match="within 5 s") as info:
        login(sim, tmp_path, "pushuser", two_factor=config)
    assert info.value.spends_budget
    state = sim.state()
    assert state["pushes_sent"] == 1 and state["login_successes"] == 0


def test_twofa_custom_handler_from_inputs_dir(sim, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "custom_two_fa_handler.py").write_text(
        textwrap.dedent(
            f"""\
            import json, urllib.request
            from ibeam.src.two_fa_handlers.two_fa_handler import TwoFaHandler

            class CustomTwoFaHandler(TwoFaHandler):
                def get_two_fa_code(self, driver):
                    assert driver.find_element("css selector", "input[placeholder]")
                    url = "{sim.control_url}/sim/2fa/last_code"
                    with urllib.request.urlopen(url) as reply:
                        return json.load(reply)["code"]
            """
        )
    )
    config = TwoFactorConfig(
        handler="CUSTOM_HANDLER", inputs_dir=inputs, outputs_dir=tmp_path / "outputs"
    )
    result = login(sim, tmp_path, "smsuser", two_factor=config)
    assert result.second_factor == "CUSTOM_HANDLER"


@pytest.mark.parametrize(
    ("page", "variant"),
    [
        ("current", "silver"),
        ("current", "bronze"),
        ("current", "gold"),
        ("legacy", "temp"),
    ],
)
def test_twofa_method_picker_and_code_variants(sim, tmp_path, caplog, page, variant):
    """S07: the picker reveals a code input whose id differs between variants."""
    caplog.set_level(logging.INFO)
    sim.faults(login_page=page, code_input_variant=variant)
    result = login(sim, tmp_path, "pickeruser", two_factor=totp())
    assert result.steps[-3:] == ("method_picker", "code_input", "success")
    assert "chose 'Mobile Authenticator App'" in caplog.text
    assert result.page_variant == ("legacy" if page == "legacy" else "current")


def test_twofa_picker_push_by_select_target(sim, tmp_path):
    config = TwoFactorConfig(
        handler="IBKEY_PUSH", select_target="IB Key", push_timeout=60
    )
    notify = lambda event, detail: threading.Timer(0.5, sim.approve_push).start()  # noqa: E731
    result = login(sim, tmp_path, "pickeruser", two_factor=config, notify=notify)
    assert "push_waiting" in result.steps
    assert sim.state()["pushes_sent"] == 1


def test_twofa_code_page_without_source_asks_once(sim, tmp_path):
    """S09: a code is sent once at most, then the attempt stops as a config error."""
    with pytest.raises(SecondFactorUnavailable, match="IBEAM_TWO_FA_HANDLER") as info:
        login(sim, tmp_path, "smsuser")
    assert not info.value.spends_budget
    state = sim.state()
    assert state["codes_sent"] == 1 and state["codes_received"] == 0


def test_twofa_picker_without_source_sends_nothing(sim, tmp_path):
    with pytest.raises(SecondFactorUnavailable):
        login(sim, tmp_path, "pickeruser")
    state = sim.state()
    assert state["codes_sent"] == 0 and state["pushes_sent"] == 0


def test_twofa_unapproved_push_then_relogin_succeeds(sim, tmp_path):
    """A second attempt after an expired push works from a fresh browser."""
    sim.faults(push_auto_approve={"on_push": 2, "after_s": 1})
    config = TwoFactorConfig(handler="IBKEY_PUSH", push_timeout=4)
    with pytest.raises(SecondFactorFailed):
        login(sim, tmp_path, "pushuser", two_factor=config)
    config = TwoFactorConfig(handler="IBKEY_PUSH", push_timeout=30)
    result = login(sim, tmp_path, "pushuser", two_factor=config)
    assert result.second_factor == "IBKEY_PUSH"
    assert sim.state()["pushes_sent"] == 2


def test_twofa_gateway_answers_after_login(sim, tmp_path):
    login(sim, tmp_path, "totpuser", two_factor=totp())
    state = sim.wait_for(lambda s: s["authenticated"], timeout=30)
    assert state["user"] == "totpuser"
    assert sim.request("GET", "/v1/api/tickle").status_code == 200
