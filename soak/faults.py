"""The faults the soak injects, each through the simulator's control API.

`FaultPlan` draws the next fault and the pause before it from a seeded random
generator, so a seed names one run.  Every fault is something a gateway does in
the field (docs/simulator.md lists the knobs); none is an operator's action.
Spurious bad-password answers spend the failure budget by design (the agent
cannot tell them from a real refusal), so one is injected only while the budget
is untouched and the session is ready: they can never add up to a lock-out.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from gateway_sim.harness import SimGateway, SimGatewayError

NEW_YORK = ZoneInfo("America/New_York")
PAGES = ("current", "legacy", "names_only", "two_step")
CODE_INPUTS = ("silver", "bronze", "gold", "temp")

# fault -> weight; the pause between faults is exponential around the mean gap.
WEIGHTS = {
    "expire": 3.0,
    "drop": 2.0,
    "compete": 1.0,
    "error_window": 2.0,
    "hang": 1.5,
    "crash": 1.0,
    "page_variant": 1.5,
    "unrecognised_page": 0.5,
    "promo": 0.7,
    "spurious_bad_password": 0.5,
    "nightly_reset": 1.5,
}


@dataclass
class FaultPlan:
    """Draws and applies faults; remembers what it did."""

    sim: SimGateway
    seed: int
    mean_gap_s: float = 8.0
    rng: random.Random = field(init=False)
    done: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    clock_offset_s: float = 0.0
    # knob -> monotonic time at which to put it back to its default
    reverts: dict[str, tuple[float, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def next_gap(self) -> float:
        return min(self.rng.expovariate(1.0 / self.mean_gap_s), 4 * self.mean_gap_s)

    def draw(self) -> str:
        names = list(WEIGHTS)
        return self.rng.choices(names, weights=[WEIGHTS[n] for n in names])[0]

    def inject(self, name: str, agent_status: dict) -> bool:
        """Apply fault name; False when it was skipped (gateway down, unsafe)."""
        try:
            applied = getattr(self, f"_{name}")(agent_status)
        except SimGatewayError:
            applied = False
        (self.done if applied else self.skipped)[name] += 1
        return applied

    def restore_due(self) -> None:
        """Put back knobs whose window has passed (a page variant, a promotion)."""
        now = time.monotonic()
        for knob, (at, value) in list(self.reverts.items()):
            if now >= at:
                try:
                    self.sim.faults(**{knob: value})
                except SimGatewayError:
                    continue
                del self.reverts[knob]

    def reapply(self) -> None:
        """After a gateway restart: the clock keeps its place, windows end."""
        self.reverts.clear()
        if self.clock_offset_s:
            self.sim.faults(clock_offset_s=self.clock_offset_s)

    # -- the faults ----------------------------------------------------------------

    def _expire(self, status: dict) -> bool:
        self.sim.expire(style=self.rng.choice(("401", "no_session")))
        return True

    def _drop(self, status: dict) -> bool:
        self.sim.drop()
        return True

    def _compete(self, status: dict) -> bool:
        if not self.sim.state()["sso"]:
            return False
        self.sim.compete()
        return True

    def _error_window(self, status: dict) -> bool:
        self.sim.faults(
            error_status=self.rng.choice((500, 502, 503, 504)),
            error_for_s=round(self.rng.uniform(2, 12), 1),
            error_scope=self.rng.choice(("api", "api", "all")),
        )
        return True

    def _hang(self, status: dict) -> bool:
        self.sim.faults(hang_for_s=round(self.rng.uniform(2, 10), 1))
        return True

    def _crash(self, status: dict) -> bool:
        self.sim.crash()
        return True

    def _page_variant(self, status: dict) -> bool:
        self.sim.faults(
            login_page=self.rng.choice(PAGES),
            code_input_variant=self.rng.choice(CODE_INPUTS),
        )
        return True

    def _unrecognised_page(self, status: dict) -> bool:
        self.sim.faults(login_page="unrecognised")
        back = time.monotonic() + self.rng.uniform(5, 20)
        self.reverts["login_page"] = (back, "current")
        return True

    def _promo(self, status: dict) -> bool:
        self.sim.faults(ibkey_promo=True)
        self.reverts["ibkey_promo"] = (time.monotonic() + 60, False)
        return True

    def _spurious_bad_password(self, status: dict) -> bool:
        budget = (status.get("failures") or {}).get("budget") or {}
        if not status.get("ready") or budget.get("spent", 1) != 0:
            return False
        if self.sim.faults().get("spurious_bad_password"):
            return False
        self.sim.faults(spurious_bad_password=1)
        return True

    def _nightly_reset(self, status: dict) -> bool:
        """Jump the simulated clock to 3 s before the next 01:00 New York."""
        now = time.time()
        local = dt.datetime.fromtimestamp(now + self.clock_offset_s, NEW_YORK)
        boundary = local.replace(hour=1, minute=0, second=0, microsecond=0)
        if boundary <= local + dt.timedelta(seconds=3):
            boundary += dt.timedelta(days=1)
            boundary = boundary.replace(tzinfo=NEW_YORK)
        self.clock_offset_s = boundary.timestamp() - 3 - now
        self.sim.faults(clock_offset_s=self.clock_offset_s)
        return True
