"""The login conversation behind the page: credentials, mode, second factor, promo.

The page's script posts JSON actions to /sso/Authenticator (the real form's
endpoint is not known, see docs/simulator.md) and draws whatever step the
answer names. A flow lives from one load of /sso/Login to /sso/Dispatcher.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from .accounts import Account
from .session import Simulator

BAD_CREDENTIALS = "Invalid username password combination"
LOCKED = (
    "This account is locked after too many failed login attempts. "
    "Contact Client Services to unlock it."
)
WRONG_MODE_LIVE = (
    "You have selected the Live Account Mode, but the specified user is a Paper "
    "Trading user. Please select the correct Login mode."
)
WRONG_MODE_PAPER = (
    "You have selected the Paper Trading Account Mode, but the specified user is "
    "a Live Trading user. Please select the correct Login mode."
)
BAD_CODE = "Incorrect security code"
PUSH_EXPIRED = (
    "The IB Key notification has expired. Resend it and approve it on your phone."
)
FLOW_LOST = "Your login session has expired. Please reload the page and log in again."

METHODS = {
    "ibkey_push": ("5.2a", "IB Key"),
    "totp": ("4", "Mobile Authenticator App"),
    "sms": ("1", "SMS"),
}
TOTP_STEP = 30
FLOW_TTL_S = 1800


@dataclass
class Flow:
    """One browser's way through the login page."""

    token: str
    created: float
    stage: str = "password"
    account: Account | None = None
    method: str | None = None
    expected_code: str | None = None
    push_number: int | None = None


def new_flow(sim: Simulator) -> Flow:
    """Start a flow for a fresh load of the login page."""
    with sim.lock:
        now = sim.mono()
        for token in [t for t, f in sim.flows.items() if now - f.created > FLOW_TTL_S]:
            del sim.flows[token]
        while len(sim.flows) >= 64:
            sim.flows.popitem(last=False)
        flow = Flow(token=secrets.token_hex(16), created=now)
        sim.flows[flow.token] = flow
        return flow


def find_flow(sim: Simulator, token: str | None) -> Flow | None:
    with sim.lock:
        return sim.flows.get(token or "")


def finish(sim: Simulator, token: str | None) -> bool:
    """/sso/Dispatcher: complete the login if this browser's flow is done."""
    with sim.lock:
        flow = sim.flows.get(token or "")
        if flow is None or flow.stage != "done" or flow.account is None:
            return False
        del sim.flows[flow.token]
        sim.complete_login(flow.account)
        return True


def handle(
    sim: Simulator, flow: Flow | None, request: dict[str, Any]
) -> dict[str, Any]:
    """Answer one action posted by the page."""
    if flow is None:
        return _error(FLOW_LOST)
    action = request.get("action")
    if action == "login":
        return _login(sim, flow, request)
    if action == "code":
        return _code(sim, flow, str(request.get("code") or ""))
    handlers = {
        "choose": lambda: _choose(sim, flow, str(request.get("method") or "")),
        "push_status": lambda: _push_status(sim, flow),
        "push_resend": lambda: _push_resend(sim, flow),
        "challenge": lambda: _challenge(sim, flow),
        "promo_skip": lambda: _promo_skip(sim, flow, bool(request.get("auto"))),
    }
    if action not in handlers:
        return _error(f"Unknown action {action!r}")
    with sim.lock:
        return handlers[action]()


def _error(message: str, step: str = "error") -> dict[str, Any]:
    return {"step": step, "message": message}


def _login(sim: Simulator, flow: Flow, request: dict[str, Any]) -> dict[str, Any]:
    user = str(request.get("username") or "")
    password = request.get("password")
    password = password if isinstance(password, str) else ""
    paper = request.get("paper")
    sim.record_password(password)
    with sim.lock:
        sim.counters["login_attempts"] += 1
        flow.stage, flow.account, flow.method = "password", None, None
        account = sim.accounts.get(user)
        if account is not None and account.user in sim.locked:
            sim.counters["login_failures"] += 1
            return _error(LOCKED, "locked")
        if account is None or not hmac.compare_digest(
            password.encode("utf-8"), account.password.encode("utf-8")
        ):
            return _bad_password(sim, account)
        if sim.faults["spurious_bad_password"] > 0:
            sim.faults["spurious_bad_password"] -= 1
            sim.counters["login_failures"] += 1
            sim.counters["spurious_failures"] += 1
            return _error(BAD_CREDENTIALS)
        sim.streaks[account.user] = 0
        if isinstance(paper, bool) and paper != account.paper:
            sim.counters["wrong_mode_errors"] += 1
            return _error(WRONG_MODE_PAPER if paper else WRONG_MODE_LIVE, "wrong_mode")
        flow.account = account
        return _after_password(sim, flow)


def _bad_password(sim: Simulator, account: Account | None) -> dict[str, Any]:
    sim.counters["login_failures"] += 1
    if account is not None:
        streak = sim.streaks.get(account.user, 0) + 1
        sim.streaks[account.user] = streak
        if streak >= sim.faults["lockout_after"]:
            sim.locked.add(account.user)
            sim.log("account locked after repeated bad passwords")
    return _error(BAD_CREDENTIALS)


def _after_password(sim: Simulator, flow: Flow) -> dict[str, Any]:
    assert flow.account is not None
    kind = flow.account.second_factor
    if kind == "none":
        return _after_factors(sim, flow)
    if kind == "picker":
        flow.stage = "choose"
        options = [
            {"value": METHODS[m][0], "text": METHODS[m][1]}
            for m in flow.account.methods
        ]
        return {"step": "picker", "options": options}
    return _start_method(sim, flow, kind)


def _start_method(sim: Simulator, flow: Flow, method: str) -> dict[str, Any]:
    flow.method = method
    if method == "ibkey_push":
        flow.stage = "push"
        flow.push_number = sim.send_push(flow.token).number
        return {"step": "push"}
    flow.stage = "code"
    if method == "sms":
        flow.expected_code = f"{secrets.randbelow(10**6):06d}"
        sim.last_code = flow.expected_code
        sim.counters["codes_sent"] += 1
    return {
        "step": "code",
        "method": method,
        "variant": sim.faults["code_input_variant"],
    }


def _choose(sim: Simulator, flow: Flow, value: str) -> dict[str, Any]:
    if flow.stage != "choose" or flow.account is None:
        return _error(FLOW_LOST)
    for method in flow.account.methods:
        if METHODS[method][0] == value or METHODS[method][1] == value:
            return _start_method(sim, flow, method)
    return _error("Select a second factor device", "choose_error")


def _code(sim: Simulator, flow: Flow, code: str) -> dict[str, Any]:
    with sim.lock:
        if flow.stage != "code" or flow.account is None:
            return _error(FLOW_LOST)
        sim.counters["codes_received"] += 1
        method, account = flow.method, flow.account
        latency = sim.faults["totp_latency_ms"] / 1000.0 if method == "totp" else 0.0
        window = sim.faults["totp_window_steps"]
    if latency:
        sim.sleep(latency)
    code = code.strip().replace(" ", "")
    if method == "totp":
        good = totp_matches(account, code, sim.wall(), window)
    else:
        good = bool(flow.expected_code) and hmac.compare_digest(
            code.encode(), (flow.expected_code or "").encode()
        )
    with sim.lock:
        if flow.stage != "code":
            return _error(FLOW_LOST)
        if good and sim.faults["reject_next_codes"] > 0:
            sim.faults["reject_next_codes"] -= 1
            good = False
        if not good:
            sim.counters["second_factor_failures"] += 1
            return _error(BAD_CODE, "code_error")
        return _after_factors(sim, flow)


def totp_matches(account: Account, code: str, now: float, window: int) -> bool:
    """Check a 6-digit TOTP code against the 30 s steps around now."""
    if not (code.isdigit() and len(code) == 6) or not account.totp_secret:
        return False
    totp = TOTP(account.totp_key(), 6, SHA1(), TOTP_STEP, enforce_key_length=False)
    candidates = (
        totp.generate(now + k * TOTP_STEP) for k in range(-window, window + 1)
    )
    return any(hmac.compare_digest(code.encode(), c) for c in candidates)


def _push_status(sim: Simulator, flow: Flow) -> dict[str, Any]:
    if flow.stage != "push":
        return _error(FLOW_LOST)
    push = sim.push
    if push is None or push.flow != flow.token or push.number != flow.push_number:
        return _error(PUSH_EXPIRED, "push_error")
    if push.approved:
        sim.push = None
        return _after_factors(sim, flow)
    if sim.mono() >= push.expires:
        sim.counters["second_factor_failures"] += 1
        flow.push_number = None
        return _error(PUSH_EXPIRED, "push_error")
    return {"step": "push"}


def _push_resend(sim: Simulator, flow: Flow) -> dict[str, Any]:
    if flow.stage != "push":
        return _error(FLOW_LOST)
    flow.push_number = sim.send_push(flow.token).number
    return {"step": "push"}


def _challenge(sim: Simulator, flow: Flow) -> dict[str, Any]:
    """Switch from the push to IB Key challenge/response (gold code input)."""
    if flow.stage != "push":
        return _error(FLOW_LOST)
    flow.stage, flow.method = "code", "ibkey_challenge"
    flow.expected_code = f"{secrets.randbelow(10**8):08d}"
    sim.last_code = flow.expected_code
    challenge = f"{secrets.randbelow(10**8):08d}"
    return {
        "step": "code",
        "method": "ibkey_challenge",
        "variant": "gold",
        "challenge": challenge,
    }


def _after_factors(sim: Simulator, flow: Flow) -> dict[str, Any]:
    if sim.faults["ibkey_promo"]:
        flow.stage = "promo"
        sim.counters["promos_shown"] += 1
        return {
            "step": "promo",
            "auto_continue_s": sim.faults["ibkey_promo_auto_continue_s"],
        }
    flow.stage = "done"
    return {"step": "success", "location": "/sso/Dispatcher"}


def _promo_skip(sim: Simulator, flow: Flow, automatic: bool) -> dict[str, Any]:
    if flow.stage != "promo":
        return _error(FLOW_LOST)
    if not automatic:
        sim.counters["promos_skipped"] += 1
    flow.stage = "done"
    return {"step": "success", "location": "/sso/Dispatcher"}
