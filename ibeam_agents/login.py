"""The login page flow: one attempt through the gateway's browser login.

``perform_login`` opens the login page in a fresh Chromium (``browser``), or in
the warm one started while the gateway booted, then loops: read the page in
one script call, class it with ``classify_page``, and hand the state to the
function named after it, until the page says the login succeeded or a handler
raises.  Between reads the page itself reports its next change (a DOM
mutation, an input, a navigation); it is read again at least every 250 ms,
never after a fixed sleep.

Which failures spend the failure budget is decided by the error class (see
``errors``): a rejected password, a refused code, an unapproved push, or an
error banner we cannot read after the password went in.  Pages we do not
recognise, timeouts and environment errors never do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium.common.exceptions import (
    TimeoutException,
    WebDriverException,
)

from ibeam_agents.browser import (
    SeleniumPage,
    gateway_spki_hash,
    open_browser,
    page_changed_under,
    preflight_browser,
    redact,
    take_warm_browser,
)
from ibeam_agents.credentials import Credentials
from ibeam_agents.errors import (
    AccountLocked,
    BrowserUnavailable,
    BudgetedLoginError,
    ConfigError,
    CredentialsRejected,
    GatewayNotRunning,
    GatewayUnreachable,
    LoginTimeout,
    PageNotRecognised,
    SecondFactorFailed,
    SecondFactorUnavailable,
    WrongTradingMode,
)
from ibeam_agents.selectors import Found, Locator, PageSnapshot, build_chains
from ibeam_agents.twofa import (
    DEFAULT_PUSH_TIMEOUT,
    CodeContext,
    SecondFactor,
    TwoFactorConfig,
    make_second_factor,
)

__all__ = [
    "LoginOptions",
    "LoginResult",
    "LoginRefused",
    "PageState",
    "PageSnapshot",
    "Found",
    "classify_page",
    "perform_login",
    "preflight_browser",
]

log = logging.getLogger(__name__)

Notify = Callable[[str, str], None]

# Longest a handler goes without being asked again, so deadlines are kept.
WAKE_INTERVAL = 1.0
TRADING_MODES = ("live", "paper")


@dataclass(frozen=True)
class LoginOptions:
    """Everything one login attempt needs besides credentials and second factor."""

    base_url: str
    route_auth: str
    trading_mode: str
    chrome_driver_path: str
    chrome_binary_path: str
    outputs_dir: Path
    page_load_timeout: float
    step_timeout: float
    success_text: str = "Client login succeeds"
    user_name_el: str | None = None
    password_el: str | None = None
    submit_el: str | None = None
    display: str | None = None
    ui_scaling: float = 1.0


@dataclass(frozen=True)
class LoginResult:
    """How a successful attempt went, for the log and the status page."""

    page_variant: str
    second_factor: str | None
    steps: tuple[str, ...]
    duration_s: float


class LoginRefused(BudgetedLoginError):
    """After the password, the page showed an error we do not recognise.

    It spends the budget: an unknown refusal may well be a bad credential, and
    guessing wrong the other way could lock the account.  Unless the gateway is
    in trouble at that moment (``ambiguous``: the watcher asks it first).
    """

    ambiguous = True


class PageState(Enum):
    """What the login page shows, as ``classify_page`` reads it."""

    LOADING = "loading"
    FORM = "form"
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"
    WRONG_MODE = "wrong_mode"
    ERROR_OTHER = "error_other"
    METHOD_PICKER = "method_picker"
    CODE_INPUT = "code_input"
    CODE_REJECTED = "code_rejected"
    PUSH_WAITING = "push_waiting"
    PROMO = "promo"
    SUCCESS = "success"
    UNKNOWN = "unknown"


# --- classification ---------------------------------------------------------

_LOCKED = re.compile(
    r"\block(ed|out)\b|\bdisabled\b|\bsuspend|too many (failed|unsuccessful|attempts)",
    re.I,
)
_WRONG_MODE = re.compile(r"paper trading user|live account mode|login mode", re.I)
_SECOND_FACTOR = re.compile(
    r"security code|\bcode\b|challenge|ib key|two.factor|second factor", re.I
)
_CREDENTIALS = re.compile(
    r"user\s*name|password|credential|invalid|incorrect|failed|not recogni", re.I
)
# Words that judge what was typed; a refusal without them (a bare "ERROR", a
# network message) is ambiguous, as a gateway outage shows the same.
_EXPLICIT_CREDENTIALS = re.compile(
    r"user\s*name|password|credential|invalid|incorrect|not recogni", re.I
)
_EXPLICIT_CODE = re.compile(
    r"incorrect|invalid|wrong|expired|denied|rejected|not (valid|correct)", re.I
)
# Banners that ask to start over rather than judge the credentials.
_START_OVER = re.compile(
    r"reload the page|try again later|temporarily|maintenance|session has expired",
    re.I,
)


def classify_error_text(text: str, on_second_factor: bool) -> PageState:
    """Class an error banner's text."""
    if _LOCKED.search(text):
        return PageState.LOCKED
    if _WRONG_MODE.search(text):
        return PageState.WRONG_MODE
    if on_second_factor or _SECOND_FACTOR.search(text):
        return PageState.CODE_REJECTED
    if _CREDENTIALS.search(text):
        return PageState.BAD_CREDENTIALS
    return PageState.ERROR_OTHER


def _second_factor_step(page: PageSnapshot) -> PageState | None:
    picker = page.get("method_picker")
    if picker is not None and not picker.value:
        return PageState.METHOD_PICKER
    if page.has("code_input"):
        return PageState.CODE_INPUT
    if page.has("push_block"):
        return PageState.PUSH_WAITING
    if picker is not None:
        return PageState.METHOD_PICKER  # chosen, the next block not shown yet
    return None


def classify_page(page: PageSnapshot) -> PageState:
    """Return the state the page is in; pure, so tests feed it fake snapshots."""
    if page.has("success"):
        return PageState.SUCCESS
    if page.ready_state == "loading":
        return PageState.LOADING

    step = _second_factor_step(page)
    error = page.text("error")
    if error:
        return classify_error_text(error, step is not None)
    if page.has("promo_skip"):
        return PageState.PROMO
    if step is not None:
        return step
    if page.has("loading"):
        return PageState.LOADING
    if page.has("user_name") or page.has("password"):
        return PageState.FORM
    return PageState.UNKNOWN


def page_variant(page: PageSnapshot) -> str | None:
    """Which DOM the form comes from, by the locator that found the fields."""
    for key in ("user_name", "password"):
        item = page.get(key)
        if item is not None:
            return item.locator.origin
    return None


# --- the flow ---------------------------------------------------------------


class _Next(Enum):
    WAIT = "wait"  # nothing to do until the page changes
    ACTED = "acted"  # we did something: wait for the page to react
    DONE = "done"


class LoginFlow:
    """One pass through the login page, state by state."""

    def __init__(
        self,
        page: Any,
        options: LoginOptions,
        credentials: Credentials,
        second_factor: SecondFactor | None,
        *,
        chains: Mapping[str, tuple[Locator, ...]],
        push_timeout: float = DEFAULT_PUSH_TIMEOUT,
        select_target: str | None = None,
        notify: Notify | None = None,
        probe: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.page = page
        self.probe = probe
        self.options = options
        self.credentials = credentials
        self.second_factor = second_factor
        self.chains = chains
        self.push_timeout = push_timeout
        self.select_target = select_target
        self.notify = notify
        self.clock = clock

        self.started = clock()
        self.state: PageState | None = None
        self.state_since = self.started
        self.acted_at = self.started
        self.mark: tuple[str, int] | None = None
        self.steps: list[str] = []
        self.variant: str | None = None
        self.password_submits = 0
        self.resubmit_allowed = False
        self.user_step_done = False
        self.mode_retried = False
        self.promo_clicks = 0
        self.picked: str | None = None
        self.picks = 0
        self.code_attempts = 0
        self.retry_code = False
        self.last_code: str | None = None
        self.rejected: set[str] = set()
        self.push_seen_at: float | None = None
        self.second_factor_used: str | None = None
        self.missing_source: str | None = None  # what the page asked for, unanswered
        self.deadline = self.started + (
            options.page_load_timeout + push_timeout + 10 * options.step_timeout + 60
        )

    # -- the loop

    def run(self) -> LoginResult:
        self.page.open(self.options.base_url.rstrip("/") + self.options.route_auth)
        snapshot = self.read()
        while True:
            self._check_overall_deadline()
            self._check_browser_error(snapshot)
            state = classify_page(snapshot)
            self._enter(state, snapshot)
            try:
                outcome = self._handle(state, snapshot)
            except WebDriverException as err:
                # An element we acted on went away with its page: read the
                # new page instead of failing the login.
                if not page_changed_under(err):
                    raise
                outcome = _Next.WAIT
            if outcome is _Next.DONE:
                return self._result()
            snapshot = self._await_change(snapshot)

    def read(self) -> PageSnapshot:
        return self.page.read(self.chains)

    def _await_change(self, before: PageSnapshot) -> PageSnapshot:
        signature = self._signature(before)
        return self.page.wait_for(
            lambda snap: self._signature(snap) != signature,
            self.chains,
            WAKE_INTERVAL,
        )

    @staticmethod
    def _signature(snap: PageSnapshot) -> tuple:
        keys = tuple(sorted(snap.found))
        values = tuple((item.value, item.checked) for item in snap.found.values())
        return (snap.document, snap.url, keys, snap.text("error"), values)

    def _enter(self, state: PageState, snapshot: PageSnapshot) -> None:
        if state is self.state:
            return
        old = self.state.value if self.state else "start"
        detail = ""
        if state is PageState.FORM and self.variant is None:
            detail = f" ({page_variant(snapshot)} DOM)"
        log.info("login page: %s -> %s%s", old, state.value, detail)
        self.state = state
        self.state_since = self.clock()
        self.steps.append(state.value)

    def _handle(self, state: PageState, snap: PageSnapshot) -> _Next:
        handler = getattr(self, f"on_{state.value}")
        return handler(snap)

    def _dwell(self) -> float:
        return self.clock() - max(self.state_since, self.acted_at)

    def _limit(self) -> float:
        if self.mark is None:
            return self.options.page_load_timeout
        return self.options.step_timeout

    def _stuck(self) -> bool:
        return self._dwell() > self._limit()

    def _reacted(self, snap: PageSnapshot) -> bool:
        """Whether the page answered our last action.

        A page that shows its busy indicator is still working on it: the
        block we acted on may still be visible under the spinner, and acting
        on it again would send the same step twice.
        """
        if self.mark is None:
            return True
        if snap.has("loading"):
            return False
        document, mutations = self.mark
        return snap.document != document or snap.mutations > mutations

    def _acted(self) -> _Next:
        self.acted_at = self.clock()
        return _Next.ACTED

    def _set_mark(self) -> None:
        self.mark = self.page.mark()

    def _check_overall_deadline(self) -> None:
        if self.clock() > self.deadline:
            self._fail(
                LoginTimeout(
                    "the login did not finish within "
                    f"{self.deadline - self.started:.0f} s; the page kept changing "
                    "without reaching success"
                )
            )

    def _check_browser_error(self, snap: PageSnapshot) -> None:
        if snap.url.startswith("chrome-error://"):
            raise GatewayUnreachable(
                "the gateway stopped answering during the login (the browser "
                "shows its own error page)"
            )

    def _result(self) -> LoginResult:
        duration = self.clock() - self.started
        log.info(
            "login page: login succeeded in %.1f s (%s DOM, second factor: %s)",
            duration,
            self.variant or "unknown",
            self.second_factor_used or "none",
        )
        return LoginResult(
            page_variant=self.variant or "unknown",
            second_factor=self.second_factor_used,
            steps=tuple(self.steps),
            duration_s=duration,
        )

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    def _secrets(self) -> list[str]:
        secrets = [self.credentials.password, self.credentials.account]
        if self.last_code:
            secrets.append(self.last_code)
        return secrets

    def _fail(self, error: Exception, *, dump: bool = True) -> None:
        """Save the page (redacted) next to the error, then raise it."""
        if dump:
            paths = self.page.dump(
                self.options.outputs_dir, self._secrets(), self.state
            )
            if paths:
                error.args = (f"{error.args[0]}; page saved to {', '.join(paths)}",)
        raise error

    def _stall(self, message: str) -> _Next:
        """Wait, or give up with LoginTimeout once the step timeout passed."""
        if self._stuck():
            self._fail(LoginTimeout(f"{message} within {self._limit():g} s"))
        return _Next.WAIT

    # -- states that only wait or end

    def on_success(self, snap: PageSnapshot) -> _Next:
        return _Next.DONE

    def on_loading(self, snap: PageSnapshot) -> _Next:
        return self._stall("the login page kept loading")

    def on_unknown(self, snap: PageSnapshot) -> _Next:
        if not self._stuck():
            return _Next.WAIT
        path = urlsplit(snap.url).path or "the login page"
        self._fail(
            PageNotRecognised(
                f"{path} matched no known login page layout for {self._limit():g} s; "
                "if IBKR changed the page, set IBEAM_USER_NAME_EL, IBEAM_PASSWORD_EL "
                "and IBEAM_SUBMIT_EL to its elements"
            )
        )
        return _Next.WAIT

    def on_locked(self, snap: PageSnapshot) -> _Next:
        raise AccountLocked(
            "the login page says the account is locked or disabled: "
            f"{self._redact(snap.text('error'))!r}; unlock it with IBKR, then reset "
            "the failure count"
        )

    # -- the credentials form

    def on_form(self, snap: PageSnapshot) -> _Next:
        if self.password_submits and not self.resubmit_allowed:
            if not self._reacted(snap):
                return self._stall("no answer came after the password was submitted")
            return self._stall("the login form came back without a message")

        user, password = snap.get("user_name"), snap.get("password")
        if password is None:
            return self._submit_user_name(snap, user)
        if self.password_submits >= 2:
            self._fail(
                LoginTimeout("the login form kept coming back after two submits")
            )
        return self._submit_credentials(snap, user, password)

    def _submit_user_name(self, snap: PageSnapshot, user: Found | None) -> _Next:
        """Two-step page: the user name first, then Continue."""
        if user is None:
            return _Next.WAIT
        if self.user_step_done and not self._reacted(snap):
            return self._stall("no password field came after the user name")
        self.variant = self.variant or page_variant(snap)
        self._type(user, self.credentials.account, "user name")
        button = snap.get("continue") or snap.get("submit")
        self._set_mark()
        self._press(button, user)
        self.user_step_done = True
        log.info("login page: user name submitted (two-step form)")
        return self._acted()

    def _submit_credentials(
        self, snap: PageSnapshot, user: Found | None, password: Found
    ) -> _Next:
        self.variant = self.variant or page_variant(snap)
        if user is not None:
            self._type(user, self.credentials.account, "user name")
        self._set_trading_mode()
        self._type(password, self.credentials.password, "password")
        self._check_trading_mode()

        self._set_mark()
        self._press(snap.get("submit"), password)
        self.password_submits += 1
        self.resubmit_allowed = False
        log.info(
            "login page: credentials submitted (%s DOM, %s mode)",
            self.variant,
            self.options.trading_mode,
        )
        return self._acted()

    def _type(self, item: Found, text: str, what: str) -> None:
        if not self.page.type_exact(item.element, text):
            self._fail(
                PageNotRecognised(
                    f"the {what} field ({item.locator}) did not keep what was typed"
                ),
                dump=False,
            )

    def _press(self, button: Found | None, field_item: Found) -> None:
        if button is not None:
            self.page.click(button.element)
        else:
            self.page.press_enter(field_item.element)

    # -- Live / Paper

    def _want_paper(self) -> bool:
        return self.options.trading_mode == "paper"

    def _switch_state(self) -> bool | None:
        box = self.read().get("mode_checkbox")
        return None if box is None else bool(box.checked)

    def _set_trading_mode(self) -> None:
        want = self._want_paper()
        shown = self._switch_state()
        if shown is None:
            if want:
                raise WrongTradingMode(
                    "IBEAM_TRADING_MODE is paper but the login page has no "
                    "Live/Paper switch"
                )
            return
        if shown == want:
            return
        snap = self.read()
        target = snap.get("mode_switch") or snap.get("mode_checkbox")
        self.page.js_click(target.element)
        if self._switch_state() != want:
            self.page.js_click(snap.get("mode_checkbox").element)
        self._check_trading_mode()
        log.info("login page: Live/Paper switch set to %s", self.options.trading_mode)

    def _check_trading_mode(self) -> None:
        shown = self._switch_state()
        if shown is not None and shown != self._want_paper():
            raise WrongTradingMode(
                f"the Live/Paper switch does not stay on {self.options.trading_mode}; "
                "the login was not submitted"
            )

    def on_wrong_mode(self, snap: PageSnapshot) -> _Next:
        if not self.password_submits:
            return self._before_submit(snap)
        if not self._reacted(snap) and not self._stuck():
            return _Next.WAIT
        shown = self._switch_state()
        want = self._want_paper()
        if not self.mode_retried and shown is not None and shown != want:
            self.mode_retried = True
            self.resubmit_allowed = True
            log.warning(
                "login page: the page reports the wrong Live/Paper mode and its "
                "switch shows %s; setting %s and submitting again",
                "paper" if shown else "live",
                self.options.trading_mode,
            )
            if snap.has("password"):
                return self._submit_credentials(
                    snap, snap.get("user_name"), snap.get("password")
                )
            return _Next.WAIT
        other = "live" if want else "paper"
        raise WrongTradingMode(
            f"the gateway refused {self.options.trading_mode} mode for this user "
            f"({self._redact(snap.text('error'))!r}); if the user is a {other} user, "
            f"set IBEAM_TRADING_MODE={other}"
        )

    # -- error banners

    def _before_submit(self, snap: PageSnapshot) -> _Next:
        """A banner shown before we typed anything is not about our password."""
        if snap.has("password") or snap.has("user_name"):
            return self.on_form(snap)
        return self.on_unknown(snap)

    def on_bad_credentials(self, snap: PageSnapshot) -> _Next:
        if not self.password_submits:
            return self._before_submit(snap)
        if not self._reacted(snap) and not self._stuck():
            return _Next.WAIT
        text = self._redact(snap.text("error"))
        raise CredentialsRejected(
            f"the login page rejected the user name or password: {text!r}",
            ambiguous=self._ambiguous(text, _EXPLICIT_CREDENTIALS),
        )

    def on_error_other(self, snap: PageSnapshot) -> _Next:
        if not self.password_submits:
            return self._before_submit(snap)
        if not self._reacted(snap) and not self._stuck():
            return _Next.WAIT
        text = self._redact(snap.text("error"))
        if _START_OVER.search(text):
            self._fail(LoginTimeout(f"the login page asked to start over: {text!r}"))
        if self.probe is not None:
            # A page whose request failed says "ERROR" too: when the gateway is
            # gone this raises a GatewayError, which spends nothing.
            self.probe()
        if self.second_factor_used:
            failed = f"the second factor failed: {text!r}"
            self._fail(SecondFactorFailed(failed, ambiguous=True))
        self._fail(LoginRefused(f"the login page refused the login: {text!r}"))
        return _Next.WAIT

    def _ambiguous(self, text: str, explicit: re.Pattern) -> bool:
        """Whether a refusal leaves open why; if so, the gateway is asked first.

        The probe raises a GatewayError when the gateway cannot answer now (5xx,
        nothing, refused): the page shows an outage with the same banner, and an
        outage must not spend the failure budget.
        """
        if explicit.search(text):
            return False
        if self.probe is not None:
            self.probe()
        return True

    # -- interstitials

    def on_promo(self, snap: PageSnapshot) -> _Next:
        if self.promo_clicks and not self._reacted(snap):
            return self._stall("the IB Key promotion did not go away after skipping")
        if self.promo_clicks >= 3:
            self._fail(LoginTimeout("the IB Key promotion came back three times"))
        self._set_mark()
        self.page.js_click(snap.get("promo_skip").element)
        self.promo_clicks += 1
        log.info("login page: IB Key promotion skipped")
        return self._acted()

    # -- second factor

    def _no_source(self, asked: str) -> SecondFactorUnavailable:
        self.missing_source = asked
        return SecondFactorUnavailable(
            f"the login page asks for {asked} but IBEAM_TWO_FA_HANDLER is not set; "
            "configure TOTP, COMMAND, EXTERNAL_REQUEST, IBKEY_PUSH or CUSTOM_HANDLER"
        )

    def on_method_picker(self, snap: PageSnapshot) -> _Next:
        picker = snap.get("method_picker")
        offered = [text for text, value in picker.options if value]
        if self.second_factor is None:
            raise self._no_source(f"a second-factor method ({', '.join(offered)})")
        if self.picked is not None and picker.value:
            return self._stall(f"choosing {self.picked!r} revealed no next step")
        if self.picks >= 2:
            self._fail(LoginTimeout("the method picker reset itself twice"))

        index, text = self._choose_method(picker)
        self._set_mark()
        self.page.select(picker.element, index)
        self.picked, self.picks = text, self.picks + 1
        log.info(
            "second factor: method picker (%s) offered %s; chose %r",
            picker.locator.origin,
            ", ".join(repr(item) for item in offered),
            text,
        )
        return self._acted()

    def _choose_method(self, picker: Found) -> tuple[int, str]:
        targets = [self.select_target] if self.select_target else []
        targets += list(self.second_factor.picker_targets)
        options = list(picker.options)
        for target in targets:
            for index, (text, value) in enumerate(options):
                if value and text.strip().casefold() == target.casefold():
                    return index, text.strip()
        for target in targets:
            for index, (text, value) in enumerate(options):
                if value and target.casefold() in text.casefold():
                    return index, text.strip()
        offered = ", ".join(repr(text) for text, value in options if value)
        raise SecondFactorUnavailable(
            f"the method picker offers {offered}; none fits the "
            f"{self.second_factor.kind} source; set IBEAM_TWO_FA_SELECT_TARGET to one"
        )

    def on_code_input(self, snap: PageSnapshot) -> _Next:
        source = self.second_factor
        if source is None:
            raise self._no_source("a security code")
        if not source.needs_code:
            raise SecondFactorUnavailable(
                f"the login page asks for a security code but the {source.kind} "
                "source gives none; choose a code source, or set "
                "IBEAM_TWO_FA_SELECT_TARGET to the push method"
            )
        if self.code_attempts and not self.retry_code:
            if not self._reacted(snap):
                return self._stall("no answer came after the code was submitted")
            if snap.get("code_input").value_len == 0:
                return self._code_refused(snap)
            return self._stall("the page did not move on after the code")
        return self._submit_code(source)

    def _submit_code(self, source: SecondFactor) -> _Next:
        self.second_factor_used = source.kind
        context = CodeContext(
            driver=getattr(self.page, "driver", None),
            attempt=self.code_attempts + 1,
            rejected=frozenset(self.rejected),
            page_variant=self.variant,
        )
        code = source.code(context)
        snap = self.read()
        box = snap.get("code_input")
        if box is None:
            return _Next.WAIT
        self.last_code = code
        self._type(box, code, "security code")
        self._set_mark()
        button = self.page.form_submit_button(box.element)
        if button is not None:
            self.page.click(button)
        else:
            self.page.press_enter(box.element)
        self.code_attempts += 1
        self.retry_code = False
        log.info(
            "second factor: %s code submitted into %s (found by %s locator %s)",
            source.kind,
            box.ident or "the code input",
            box.locator.origin,
            box.locator,
        )
        return self._acted()

    def on_code_rejected(self, snap: PageSnapshot) -> _Next:
        if snap.has("push_block") and not snap.has("code_input"):
            text = self._redact(snap.text("error"))
            raise SecondFactorFailed(
                f"the IB Key notification was refused or expired: {text!r}",
                ambiguous=self._ambiguous(text, _EXPLICIT_CODE),
            )
        if not self.code_attempts:
            if snap.has("code_input"):
                return self.on_code_input(snap)
            return (
                self.on_method_picker(snap)
                if snap.has("method_picker")
                else (self.on_error_other(snap))
            )
        if not self._reacted(snap) and not self._stuck():
            return _Next.WAIT
        return self._code_refused(snap)

    def _code_refused(self, snap: PageSnapshot) -> _Next:
        text = self._redact(snap.text("error"))
        ambiguous = self._ambiguous(text, _EXPLICIT_CODE)
        if self.last_code:
            self.rejected.add(self.last_code)
        kind = self.second_factor.kind if self.second_factor else "second-factor"
        if kind == "TOTP" and self.code_attempts < 2 and snap.has("code_input"):
            log.warning(
                "second factor: the TOTP code was refused; one more try with the "
                "next code"
            )
            self.retry_code = True
            return self._submit_code(self.second_factor)
        raise SecondFactorFailed(
            f"the login page refused the {kind} code "
            f"({self.code_attempts} tries): {text!r}",
            ambiguous=ambiguous,
        )

    def on_push_waiting(self, snap: PageSnapshot) -> _Next:
        now = self.clock()
        if self.push_seen_at is None:
            self.push_seen_at = now
            self.second_factor_used = "IBKEY_PUSH"
            detail = (
                "approve the IB Key notification on the phone within "
                f"{self.push_timeout:g} s"
            )
            log.info("second factor: IB Key push sent; %s", detail)
            self._notify("push_waiting", detail)
        if now - self.push_seen_at > self.push_timeout:
            raise SecondFactorFailed(
                "nobody approved the IB Key notification within "
                f"{self.push_timeout:g} s"
            )
        return _Next.WAIT

    def _notify(self, event: str, detail: str) -> None:
        if self.notify is None:
            return
        try:
            self.notify(event, detail)
        except Exception as err:  # an alert hook must not break the login
            log.warning("login page: notify(%s) failed: %s", event, err)


# --- what the page asked for last time ---------------------------------------


class SecondFactorMemo:
    """Remembers, in the outputs dir, that an account needs a second factor.

    A login that meets a code page or a method picker with no source configured
    has already cost the account one code.  The memo lets every later attempt,
    in this process or after a restart, refuse before the browser starts, so an
    account without a code source gets one code at most, not one per retry.
    Entries are keyed by a hash of the account name and removed by the next
    successful login.
    """

    FILE_NAME = "second-factor.json"

    def __init__(self, outputs_dir: Path) -> None:
        self.path = Path(outputs_dir) / self.FILE_NAME

    @staticmethod
    def _key(account: str) -> str:
        return hashlib.sha256(account.encode("utf-8")).hexdigest()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not data:
                self.path.unlink(missing_ok=True)
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("login: cannot write %s: %s", self.path, err)

    def needed(self, account: str) -> dict[str, Any] | None:
        """What the page asked this account for when no source was configured."""
        entry = self._load().get(self._key(account))
        return entry if isinstance(entry, dict) else None

    def remember(self, account: str, asked: str) -> None:
        data = self._load()
        data[self._key(account)] = {
            "asked": asked,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._save(data)

    def forget(self, account: str) -> None:
        data = self._load()
        if data.pop(self._key(account), None) is not None:
            self._save(data)

    def refuse_if_needed(self, account: str) -> None:
        """Raise SecondFactorUnavailable when the last login showed a need."""
        entry = self.needed(account)
        if entry is None:
            return
        raise SecondFactorUnavailable(
            f"the login page asked for {entry.get('asked', 'a second factor')} at "
            f"{entry.get('at', 'the last login')} and IBEAM_TWO_FA_HANDLER is still "
            "not set, so no login is tried (each would send a new code); configure "
            "a second-factor source, or delete "
            f"{self.path} if the account no longer has one"
        )


# --- entry point ------------------------------------------------------------


def _check_options(options: LoginOptions) -> None:
    if options.trading_mode not in TRADING_MODES:
        raise ConfigError(
            f"IBEAM_TRADING_MODE must be live or paper, got {options.trading_mode!r}"
        )
    if not options.route_auth.startswith("/"):
        raise ConfigError(
            f"IBEAM_ROUTE_AUTH must start with /, got {options.route_auth!r}"
        )


def _map_webdriver_error(err: WebDriverException) -> Exception:
    text = (getattr(err, "msg", None) or str(err) or "").strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if isinstance(err, TimeoutException):
        return GatewayUnreachable(f"the login page did not load in time: {first}")
    if "ERR_CONNECTION_REFUSED" in text:
        return GatewayNotRunning(f"the gateway refused the connection: {first}")
    if "net::ERR_" in text:
        return GatewayUnreachable(f"the gateway did not answer the browser: {first}")
    return BrowserUnavailable(f"the browser failed during the login: {first}")


def _probe_gateway(base_url: str, check: Callable[[], object] | None) -> None:
    """Raise a GatewayError when the gateway is gone or (with check) in trouble."""
    gateway_spki_hash(base_url)
    if check is not None:
        check()


def perform_login(
    options: LoginOptions,
    credentials: Credentials,
    two_factor: TwoFactorConfig | None,
    *,
    notify: Notify | None = None,
    gateway_check: Callable[[], object] | None = None,
) -> LoginResult:
    """Log in through the gateway's login page once; raise a LoginError if not.

    ``gateway_check`` raises a GatewayError when the gateway cannot answer now;
    it is asked when the page refuses without saying why.  Leaves no browser,
    driver or display process behind, whatever happens.
    """
    _check_options(options)
    second_factor = make_second_factor(two_factor)
    memo = SecondFactorMemo(options.outputs_dir)
    if second_factor is None:
        memo.refuse_if_needed(credentials.account)
    chains = build_chains(
        {
            "user_name": options.user_name_el,
            "password": options.password_el,
            "submit": options.submit_el,
        },
        options.success_text,
    )
    spki = gateway_spki_hash(options.base_url)
    # A browser started while the gateway booted, if it pins this certificate;
    # its start already proved browser and driver work together.
    warm = take_warm_browser(options, spki)
    if warm is None:
        preflight_browser(options, start_driver=False)
    push_timeout = two_factor.push_timeout if two_factor else DEFAULT_PUSH_TIMEOUT
    with open_browser(options, spki=spki, session=warm) as driver:
        flow = LoginFlow(
            SeleniumPage(driver),
            options,
            credentials,
            second_factor,
            chains=chains,
            push_timeout=push_timeout,
            select_target=two_factor.select_target if two_factor else None,
            notify=notify,
            probe=lambda: _probe_gateway(options.base_url, gateway_check),
        )
        try:
            result = flow.run()
        except WebDriverException as err:
            raise _map_webdriver_error(err) from err
        except SecondFactorUnavailable:
            if flow.missing_source is not None:
                memo.remember(credentials.account, flow.missing_source)
            raise
    memo.forget(credentials.account)
    return result
