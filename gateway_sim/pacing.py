"""IBKR's documented request pacing, as token buckets per client address.

The limits are IBKR's ("Pacing Limitations" of the Web API docs); the burst
allowance is the simulator's own, since IBKR does not document one.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

GLOBAL_RATE = 10.0  # requests per second through the CP gateway
RULES: list[tuple[re.Pattern, str, float]] = [
    (re.compile(r"/v1/api/tickle/?"), "tickle", 1.0),
    (re.compile(r"/v1/api/sso/validate/?"), "sso_validate", 1.0 / 60),
    (
        re.compile(
            r"/v1/api/(portfolio/(sub)?accounts|iserver/account/(orders|trades)"
            r"|iserver/account/pnl/partitioned)/?"
        ),
        "portfolio",
        1.0 / 5,
    ),
    (re.compile(r"/v1/api/iserver/marketdata/snapshot/?"), "snapshot", 10.0),
    (re.compile(r"/v1/api/(iserver/scanner/run|fyi/.*)"), "one_per_second", 1.0),
    (re.compile(r"/v1/api/(iserver/scanner/params|pa/.*)"), "slow", 1.0 / 900),
]


class Pacer:
    """Decide whether a request is within the limits (429 otherwise)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.buckets: dict[tuple[str, str], list[float]] = {}

    def allow(self, address: str, api_path: str, burst: int) -> bool:
        """Take a token from the global and the endpoint's buckets if both have one."""
        checks = [("global", GLOBAL_RATE, max(float(burst), GLOBAL_RATE))]
        for pattern, name, rate in RULES:
            if pattern.fullmatch(api_path):
                checks.append((name, rate, float(burst)))
                break
        with self.lock:
            now = self.clock()
            levels = [
                self._level(address, name, rate, cap, now) for name, rate, cap in checks
            ]
            if any(level < 1.0 for level in levels):
                return False
            for (name, _, _), level in zip(checks, levels, strict=True):
                self.buckets[(address, name)] = [level - 1.0, now]
            return True

    def _level(
        self, address: str, name: str, rate: float, cap: float, now: float
    ) -> float:
        tokens, last = self.buckets.get((address, name), (cap, now))
        level = min(cap, tokens + (now - last) * rate)
        self.buckets[(address, name)] = [level, now]
        return level
