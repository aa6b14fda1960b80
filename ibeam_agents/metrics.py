"""Prometheus metrics of the agent, on a registry of its own.

A private `CollectorRegistry` keeps the agent's metrics apart from anything
else in the process (tests run several agents in one interpreter) and out of
prometheus-client's default process collectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the watcher updates and the health server exposes."""

    def __init__(self, states: list[str], kinds: list[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.state = Enum(
            "ibeam_watcher_state",
            "Current state of the watcher.",
            states=states,
            registry=reg,
        )
        self.session = Enum(
            "ibeam_session_status",
            "Class of the gateway's last status answer.",
            states=kinds,
            registry=reg,
        )
        self.ready = Gauge(
            "ibeam_ready",
            "1 when the session is authenticated, connected and not competing.",
            registry=reg,
        )
        self.logins = Counter(
            "ibeam_logins", "Browser logins by outcome.", ["outcome"], registry=reg
        )
        self.failures = Counter(
            "ibeam_failures",
            "Failures by class (status kinds and login errors).",
            ["failure_class"],
            registry=reg,
        )
        self.reauthentications = Counter(
            "ibeam_reauthentications", "Reauthenticate requests sent.", registry=reg
        )
        self.gateway_restarts = Counter(
            "ibeam_gateway_restarts",
            "Gateway restarts ordered by the agent.",
            ["reason"],
            registry=reg,
        )
        self.budget_spent = Gauge(
            "ibeam_failure_budget_spent",
            "Login failures counted against the budget.",
            registry=reg,
        )
        self.budget_limit = Gauge(
            "ibeam_failure_budget_limit",
            "Failure budget (IBEAM_MAX_FAILED_AUTH).",
            registry=reg,
        )
        self.alert = Gauge(
            "ibeam_alert",
            "1 while the agent needs an operator's attention.",
            registry=reg,
        )
        self.gateway_memory = Gauge(
            "ibeam_gateway_memory_bytes",
            "Resident memory of the gateway processes.",
            registry=reg,
        )
        self._last_good = Gauge(
            "ibeam_seconds_since_last_good_check",
            "Seconds since the gateway last answered authenticated (-1: never).",
            registry=reg,
        )
        self._last_good_at: float | None = None
        self._clock: Callable[[], float] = time.monotonic
        self._last_good.set_function(self._seconds_since_good)

    def _seconds_since_good(self) -> float:
        if self._last_good_at is None:
            return -1.0
        return round(self._clock() - self._last_good_at, 3)

    def mark_good(self, at: float, clock: Callable[[], float]) -> None:
        """Record an authenticated answer at monotonic time at."""
        self._last_good_at = at
        self._clock = clock

    def render(self) -> bytes:
        """The exposition text, as prometheus-client writes it."""
        return generate_latest(self.registry)
