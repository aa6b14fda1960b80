"""Page classification and the login flow, driven through a scripted fake page."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from selenium.common.exceptions import TimeoutException, WebDriverException

from ibeam_agents.credentials import Credentials
from ibeam_agents.errors import (
    AccountLocked,
    BrowserUnavailable,
    BudgetedLoginError,
    CredentialsRejected,
    GatewayNotRunning,
    GatewayUnreachable,
    LoginTimeout,
    PageNotRecognised,
    SecondFactorFailed,
    SecondFactorUnavailable,
    WrongTradingMode,
)
from ibeam_agents.login import (
    LoginFlow,
    LoginOptions,
    LoginRefused,
    LoginResult,
    PageState,
    _map_webdriver_error,
    classify_error_text,
    classify_page,
)
from ibeam_agents.selectors import Found, PageSnapshot, build_chains
from ibeam_agents.twofa import CommandSource, PushApproval, TotpSource

PASSWORD = "P$w\"d#1\\a&b|c'z"
ACCOUNT = "demo_user"
CHAINS = build_chains({}, "Client login succeeds")
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

FORM = {
    "user_name": {},
    "password": {},
    "submit": {},
    "mode_switch": {},
    "mode_checkbox": {},
}
WRONG_LIVE = (
    "You have selected the Live Account Mode, but the specified user is a Paper "
    "Trading user. Please select the correct Login mode."
)
SUCCESS = {"success": {"text": "Client login succeeds"}}
CODE = {"code_input": {}}
PUSH = {"push_block": {}, "loading": {}}
PROMO = {"promo_skip": {}}
METHODS = (("Select Type", ""), ("IB Key", "5.2a"), ("Mobile Authenticator App", "4"))


def banner(text: str, screen: dict) -> dict:
    return {"error": {"text": text}, **screen}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakePage:
    """A page that shows scripted screens; each submit-like action shows the next.

    A screen is a dict chain-name -> Found fields, or a callable(page) -> dict.
    """

    def __init__(self, screens: list, clock: FakeClock, *, keeps_text=True) -> None:
        self.screens = screens
        self.index = 0
        self.clock = clock
        self.mutations = 0
        self.checked = False
        self.selected = ""
        self.keeps_text = keeps_text
        self.actions: list[tuple] = []
        self.typed: dict[str, str] = {}
        self.dumps: list[list[str]] = []
        self.on_advance = None

    def screen(self) -> dict:
        current = self.screens[self.index]
        return current(self) if callable(current) else current

    def read(self, chains) -> PageSnapshot:
        found = {}
        for name, fields in self.screen().items():
            fields = dict(fields)
            if name == "mode_checkbox":
                fields["checked"] = self.checked
            if name == "method_picker":
                fields.setdefault("options", METHODS)
                fields["value"] = self.selected
            found[name] = Found(locator=chains[name][0], element=name, **fields)
        return PageSnapshot(
            found=found,
            url="https://localhost/sso/Login",
            document="doc",
            mutations=self.mutations,
        )

    def wait_for(self, predicate, chains, timeout):
        snap = self.read(chains)
        if not predicate(snap):
            self.clock.now += timeout
        return self.read(chains)

    def mark(self):
        return ("doc", self.mutations)

    def open(self, url: str) -> None:
        self.actions.append(("open", url))

    def advance(self) -> None:
        if self.on_advance:
            self.on_advance(self)
        if self.index + 1 < len(self.screens):
            self.index += 1
            self.mutations += 1

    def type_exact(self, element, text) -> bool:
        self.actions.append(("type", element))
        self.typed[element] = text
        return self.keeps_text

    def click(self, element) -> None:
        self.actions.append(("click", element, self.checked))
        self.advance()

    def js_click(self, element) -> None:
        self.actions.append(("js_click", element))
        if element in ("mode_switch", "mode_checkbox"):
            self.checked = not self.checked
        else:
            self.advance()

    def press_enter(self, element) -> None:
        self.actions.append(("enter", element))
        self.advance()

    def select(self, element, index) -> None:
        self.actions.append(("select", element, index))
        self.selected = METHODS[index][1]
        self.advance()

    def form_submit_button(self, element):
        return "code_submit"

    def dump(self, outputs_dir, secrets, state):
        self.dumps.append(list(secrets))
        return [f"{outputs_dir}/x.png", f"{outputs_dir}/x.html"]


def options(**changes) -> LoginOptions:
    base = LoginOptions(
        base_url="https://localhost:5000",
        route_auth="/sso/Login?forwardTo=22&RL=1&ip2loc=on",
        trading_mode="live",
        chrome_driver_path="/usr/bin/chromedriver",
        chrome_binary_path="/usr/bin/chromium",
        outputs_dir=Path("/tmp/outputs"),
        page_load_timeout=20,
        step_timeout=10,
    )
    return dataclasses.replace(base, **changes)


def run(screens, *, second_factor=None, clock=None, page=None, **kwargs):
    clock = clock or FakeClock()
    page = page or FakePage(screens, clock)
    flow_kwargs = {
        k: kwargs.pop(k)
        for k in ("push_timeout", "select_target", "notify")
        if k in kwargs
    }
    flow = LoginFlow(
        page,
        options(**kwargs),
        Credentials(ACCOUNT, PASSWORD),
        second_factor,
        chains=CHAINS,
        clock=clock,
        **flow_kwargs,
    )
    return flow, page


def submits(page: FakePage) -> int:
    return sum(1 for action in page.actions if action[:2] == ("click", "submit"))


# --- classification -------------------------------------------------------------


def snap(screen: dict, **extra) -> PageSnapshot:
    found = {
        name: Found(locator=CHAINS[name][0], **fields)
        for name, fields in screen.items()
    }
    return PageSnapshot(found=found, **extra)


@pytest.mark.parametrize(
    ("screen", "state"),
    [
        (FORM, PageState.FORM),
        ({"password": {}}, PageState.FORM),
        (SUCCESS, PageState.SUCCESS),
        ({**SUCCESS, **FORM}, PageState.SUCCESS),
        (CODE, PageState.CODE_INPUT),
        (PUSH, PageState.PUSH_WAITING),
        (PROMO, PageState.PROMO),
        ({"loading": {}, **FORM}, PageState.LOADING),
        ({"method_picker": {"value": ""}}, PageState.METHOD_PICKER),
        ({"method_picker": {"value": "4"}}, PageState.METHOD_PICKER),
        ({"method_picker": {"value": "4"}, **CODE}, PageState.CODE_INPUT),
        ({}, PageState.UNKNOWN),
        (
            banner("Invalid username password combination", FORM),
            PageState.BAD_CREDENTIALS,
        ),
        (
            banner(
                "This account is locked after too many failed login attempts.", FORM
            ),
            PageState.LOCKED,
        ),
        (
            banner(
                WRONG_LIVE,
                FORM,
            ),
            PageState.WRONG_MODE,
        ),
        (banner("Incorrect security code", CODE), PageState.CODE_REJECTED),
        (banner("The IB Key notification has expired.", PUSH), PageState.CODE_REJECTED),
        (banner("ERROR", FORM), PageState.ERROR_OTHER),
    ],
)
def test_classify_page_states(screen, state):
    assert classify_page(snap(screen)) is state


def test_classify_page_loading_document():
    assert classify_page(snap({}, ready_state="loading")) is PageState.LOADING


@pytest.mark.parametrize(
    ("text", "second_factor", "state"),
    [
        ("Your account has been disabled", False, PageState.LOCKED),
        ("Account locked", True, PageState.LOCKED),
        ("failed", False, PageState.BAD_CREDENTIALS),
        ("Incorrect security code", False, PageState.CODE_REJECTED),
        ("Something odd", True, PageState.CODE_REJECTED),
        ("Something odd", False, PageState.ERROR_OTHER),
    ],
)
def test_classify_error_text(text, second_factor, state):
    assert classify_error_text(text, second_factor) is state


# --- credentials and mode ----------------------------------------------------------


def test_flow_form_to_success():
    flow, page = run([FORM, SUCCESS])
    result = flow.run()
    assert isinstance(result, LoginResult)
    assert result.page_variant == "current"
    assert result.second_factor is None
    assert result.steps == ("form", "success")
    assert page.typed == {"user_name": ACCOUNT, "password": PASSWORD}
    assert submits(page) == 1
    assert page.actions[0] == (
        "open",
        "https://localhost:5000/sso/Login?forwardTo=22&RL=1&ip2loc=on",
    )


def test_flow_sets_paper_switch_before_submit():
    flow, page = run([FORM, SUCCESS], trading_mode="paper")
    flow.run()
    toggle = page.actions.index(("js_click", "mode_switch"))
    submit = next(i for i, a in enumerate(page.actions) if a[:2] == ("click", "submit"))
    assert toggle < submit
    assert page.actions[submit] == ("click", "submit", True)


def test_flow_paper_without_switch_refuses_to_submit():
    form = {"user_name": {}, "password": {}, "submit": {}}
    flow, page = run([form, SUCCESS], trading_mode="paper")
    with pytest.raises(WrongTradingMode, match="no Live/Paper switch"):
        flow.run()
    assert submits(page) == 0


def test_flow_bad_credentials_raise_after_one_submit():
    flow, page = run([FORM, banner("Invalid username password combination", FORM)])
    with pytest.raises(CredentialsRejected) as info:
        flow.run()
    assert isinstance(info.value, BudgetedLoginError)
    assert submits(page) == 1


def test_flow_locked_account():
    locked = banner(
        "This account is locked after too many failed login attempts.", FORM
    )
    flow, page = run([FORM, locked])
    with pytest.raises(AccountLocked):
        flow.run()


def test_flow_wrong_mode_for_user_raises_without_retry():
    wrong = banner(
        WRONG_LIVE,
        FORM,
    )
    flow, page = run([FORM, wrong])
    with pytest.raises(WrongTradingMode, match="IBEAM_TRADING_MODE=paper") as info:
        flow.run()
    assert not isinstance(info.value, BudgetedLoginError)
    assert submits(page) == 1


def test_flow_wrong_mode_corrected_when_switch_slipped():
    wrong = banner(
        WRONG_LIVE,
        FORM,
    )
    clock = FakeClock()
    page = FakePage([FORM, wrong, SUCCESS], clock)

    def reset_switch_once(p):
        if p.index == 0:
            p.checked = False  # the page dropped the switch as it submitted

    page.on_advance = reset_switch_once
    flow, _ = run(None, page=page, clock=clock, trading_mode="paper")
    result = flow.run()
    assert result.steps == ("form", "wrong_mode", "success")
    assert submits(page) == 2
    assert page.actions[-1] == ("click", "submit", True)


def test_flow_banner_before_submit_is_not_a_rejection():
    stale = banner("Invalid username password combination", FORM)
    flow, page = run([stale, SUCCESS])
    assert flow.run().steps[-1] == "success"
    assert submits(page) == 1


def test_flow_no_answer_after_submit_times_out():
    flow, page = run([FORM])
    with pytest.raises(LoginTimeout, match="no answer"):
        flow.run()
    assert submits(page) == 1


def test_flow_unknown_error_after_submit_spends_budget():
    flow, page = run([FORM, banner("ERROR", FORM)])
    with pytest.raises(LoginRefused) as info:
        flow.run()
    assert info.value.spends_budget
    assert page.dumps


def test_flow_unknown_error_with_gateway_gone_is_not_budgeted():
    def probe():
        raise GatewayNotRunning("nothing listens")

    flow, page = run([FORM, banner("ERROR", FORM)])
    flow.probe = probe
    with pytest.raises(GatewayNotRunning):
        flow.run()


def test_flow_start_over_banner_is_not_budgeted():
    text = "Your login session has expired. Please reload the page and log in again."
    flow, page = run([FORM, banner(text, FORM)])
    with pytest.raises(LoginTimeout, match="start over"):
        flow.run()


def test_flow_error_text_is_redacted():
    flow, page = run([FORM, banner(f"Invalid password {PASSWORD} for {ACCOUNT}", FORM)])
    with pytest.raises(CredentialsRejected) as info:
        flow.run()
    assert PASSWORD not in str(info.value) and ACCOUNT not in str(info.value)


def test_flow_field_not_keeping_value_stops_before_submit():
    clock = FakeClock()
    page = FakePage([FORM, SUCCESS], clock, keeps_text=False)
    flow, _ = run(None, page=page, clock=clock)
    with pytest.raises(PageNotRecognised, match="did not keep"):
        flow.run()
    assert submits(page) == 0


def test_flow_two_step_form():
    first = {"user_name": {}, "continue": {}}
    flow, page = run([first, FORM, SUCCESS])
    flow.run()
    assert ("click", "continue", False) in page.actions
    assert submits(page) == 1


def test_flow_unknown_page_saves_dump_and_raises():
    flow, page = run([{}], page_load_timeout=5)
    with pytest.raises(PageNotRecognised, match="x.png") as info:
        flow.run()
    assert not info.value.spends_budget
    assert PASSWORD in page.dumps[0] and ACCOUNT in page.dumps[0]


def test_flow_promo_skipped_at_once():
    flow, page = run([FORM, PROMO, SUCCESS])
    result = flow.run()
    assert ("js_click", "promo_skip") in page.actions
    assert result.steps == ("form", "promo", "success")


def test_flow_acts_once_while_the_page_is_busy():
    """The skip link stays visible under the spinner: clicking it again would
    send the step twice and the gateway would answer that the login expired."""
    reads = []

    def busy_then_success(page):
        reads.append(1)
        return {**PROMO, "loading": {}} if len(reads) < 3 else SUCCESS

    flow, page = run([FORM, PROMO, busy_then_success])
    result = flow.run()
    assert page.actions.count(("js_click", "promo_skip")) == 1
    assert result.steps == ("form", "promo", "success")


NODE_GONE = WebDriverException(
    "unknown error: unhandled inspector error: "
    '{"code":-32000,"message":"Node with given id does not belong to the document"}'
)


def test_flow_reads_again_when_the_page_changes_under_a_click():
    """chromedriver may answer a click on an element whose page just went
    away with a DevTools error rather than a stale-element one: the login
    reads the new page instead of failing."""

    class NavigatingPage(FakePage):
        def js_click(self, element):
            if element == "promo_skip" and self.index == 1:
                self.advance()  # the click landed, then the page went
                raise NODE_GONE
            super().js_click(element)

    clock = FakeClock()
    page = NavigatingPage([FORM, PROMO, SUCCESS], clock)
    flow, _ = run([], page=page, clock=clock)
    assert flow.run().steps == ("form", "promo", "success")


def test_flow_browser_failure_during_a_step_still_fails():
    class DeadPage(FakePage):
        def js_click(self, element):
            raise WebDriverException("invalid session id")

    clock = FakeClock()
    flow, _ = run([], page=DeadPage([FORM, PROMO, SUCCESS], clock), clock=clock)
    with pytest.raises(WebDriverException, match="invalid session id"):
        flow.run()


# --- second factor ---------------------------------------------------------------


def test_flow_code_page_without_source_refuses_before_any_code():
    flow, page = run([FORM, CODE])
    with pytest.raises(SecondFactorUnavailable, match="IBEAM_TWO_FA_HANDLER"):
        flow.run()
    assert "code_input" not in page.typed


def test_flow_picker_without_source_refuses_before_choosing():
    flow, page = run([FORM, {"method_picker": {}}])
    with pytest.raises(SecondFactorUnavailable, match="IB Key"):
        flow.run()
    assert not [a for a in page.actions if a[0] == "select"]


def test_flow_push_source_on_code_page_refuses():
    flow, page = run([FORM, CODE], second_factor=PushApproval())
    with pytest.raises(SecondFactorUnavailable, match="IBKEY_PUSH"):
        flow.run()


def _totp(clock: FakeClock) -> TotpSource:
    clock.now = 30 * 1000 + 1.0
    return TotpSource(RFC_SECRET, clock=clock, sleep=clock.sleep)


def test_flow_totp_retries_once_with_next_code(caplog):
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    source = _totp(clock)
    typed = []
    page = FakePage(
        [FORM, CODE, banner("Incorrect security code", CODE), SUCCESS], clock
    )
    original = page.type_exact

    def record(element, text):
        if element == "code_input":
            typed.append(text)
        return original(element, text)

    page.type_exact = record
    flow, _ = run(None, page=page, clock=clock, second_factor=source)
    result = flow.run()
    assert result.second_factor == "TOTP"
    assert len(typed) == 2 and typed[0] != typed[1]
    for secret in (PASSWORD, ACCOUNT, RFC_SECRET, *typed):
        assert secret not in caplog.text


def test_flow_totp_refused_twice_fails():
    clock = FakeClock()
    refused = banner("Incorrect security code", CODE)
    flow, page = run(
        [FORM, CODE, refused, refused], clock=clock, second_factor=_totp(clock)
    )
    page.screens[3] = dict(refused)  # a new reading after the second submit
    with pytest.raises(SecondFactorFailed, match="2 tries"):
        flow.run()


def test_flow_command_code_refused_is_not_retried(tmp_path):
    script = tmp_path / "code.sh"
    script.write_text("#!/bin/sh\necho 123456\n")
    script.chmod(0o755)
    refused = banner("Incorrect security code", CODE)
    flow, page = run([FORM, CODE, refused], second_factor=CommandSource(str(script), 5))
    with pytest.raises(SecondFactorFailed, match="1 tries"):
        flow.run()


def test_flow_method_picker_chooses_source_method():
    clock = FakeClock()
    flow, page = run(
        [FORM, {"method_picker": {}}, CODE, SUCCESS],
        clock=clock,
        second_factor=_totp(clock),
    )
    flow.run()
    assert ("select", "method_picker", 2) in page.actions


def test_flow_method_picker_honours_select_target():
    flow, page = run(
        [FORM, {"method_picker": {}}, PUSH, SUCCESS],
        second_factor=PushApproval(),
        select_target="ib key",
    )
    page.screens[2] = lambda p: SUCCESS if p.clock.now > 1003 else PUSH
    assert flow.run().second_factor == "IBKEY_PUSH"
    assert ("select", "method_picker", 1) in page.actions


def test_flow_picker_without_matching_method(tmp_path):
    picker = {"method_picker": {"options": (("Select", ""), ("Fax", "9"))}}
    flow, page = run([FORM, picker], second_factor=PushApproval())
    with pytest.raises(SecondFactorUnavailable, match="IBEAM_TWO_FA_SELECT_TARGET"):
        flow.run()


def test_flow_push_waits_and_notifies_once():
    events = []
    clock = FakeClock()
    approved_at = clock.now + 25
    push = lambda p: SUCCESS if p.clock.now > approved_at else PUSH  # noqa: E731
    flow, page = run(
        [FORM, push], clock=clock, notify=lambda e, d: events.append((e, d))
    )
    result = flow.run()
    assert result.second_factor == "IBKEY_PUSH"
    assert [e for e, _ in events] == ["push_waiting"]
    assert "180" in events[0][1]


def test_flow_push_timeout_fails():
    flow, page = run([FORM, PUSH], push_timeout=30)
    with pytest.raises(SecondFactorFailed, match="within 30 s"):
        flow.run()


def test_flow_push_expiry_banner_fails():
    flow, page = run([FORM, banner("The IB Key notification has expired.", PUSH)])
    with pytest.raises(SecondFactorFailed, match="expired"):
        flow.run()


def test_flow_notify_failure_does_not_break_login():
    def broken(event, detail):
        raise RuntimeError("hook down")

    clock = FakeClock()
    push = lambda p: SUCCESS if p.clock.now > 1005 else PUSH  # noqa: E731
    flow, page = run([FORM, push], clock=clock, notify=broken)
    assert flow.run().steps[-1] == "success"


# --- contracts and error mapping ------------------------------------------------


def test_login_options_match_contract():
    names = [f.name for f in dataclasses.fields(LoginOptions)]
    assert (
        names[:15]
        == [
            "base_url",
            "route_auth",
            "trading_mode",
            "chrome_driver_path",
            "chrome_binary_path",
            "outputs_dir",
            "page_load_timeout",
            "step_timeout",
            "success_text",
            "user_name_el",
            "password_el",
            "submit_el",
            "display",
            "ui_scaling",
        ][:15]
    )
    defaults = options()
    assert defaults.success_text == "Client login succeeds"
    assert defaults.display is None and defaults.ui_scaling == 1.0
    assert [f.name for f in dataclasses.fields(LoginResult)] == [
        "page_variant",
        "second_factor",
        "steps",
        "duration_s",
    ]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutException("page load"), GatewayUnreachable),
        (
            WebDriverException("unknown error: net::ERR_CONNECTION_REFUSED"),
            GatewayNotRunning,
        ),
        (
            WebDriverException("unknown error: net::ERR_CONNECTION_RESET"),
            GatewayUnreachable,
        ),
        (WebDriverException("invalid session id"), BrowserUnavailable),
    ],
)
def test_webdriver_errors_are_mapped(error, expected):
    assert isinstance(_map_webdriver_error(error), expected)
