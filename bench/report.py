"""Medians, ratios, goals, and the table and page that show them."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import IBEAM_VERSION
from bench.figures import KeeperRound
from bench.probe import Floor

OURS, IBEAM = "ours", "IBeam"
# IBKR's documented pacing (Web API "Pacing Limitations").
TICKLE_LIMIT_PER_MIN = 60.0
VALIDATE_LIMIT_PER_MIN = 1.0
OVERALL_LIMIT_PER_S = 10.0

Getter = Callable[[KeeperRound], float | None]


@dataclass
class Row:
    """One line of the table: a figure for both keepers, and its goal."""

    label: str
    ours: float | None
    ibeam: float | None
    floor: float | None = None
    goal: str = ""
    met: bool | None = None  # None: no goal on this row
    digits: int = 2

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.ibeam:
            return None
        return self.ours / self.ibeam


@dataclass
class BenchResult:
    """Everything a run produced, for the table and the page."""

    rounds: list[KeeperRound]
    floors: list[Floor]
    interval: float
    idle_s: float
    round_count: int
    quick: bool
    machine: dict[str, str]
    loads: list[str]
    started: str
    finished: str
    notes: list[str]
    keeper_order: list[list[str]] = field(default_factory=list)

    def values(self, keeper: str, get: Getter) -> list[float]:
        found = []
        for one in self.rounds:
            if one.keeper != keeper:
                continue
            value = get(one)
            if value is not None:
                found.append(value)
        return found

    def floor(self, get: Callable[[Floor], float]) -> float | None:
        return statistics.median(get(f) for f in self.floors) if self.floors else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _cold(attr: str) -> Getter:
    return lambda r: getattr(r.cold, attr) if r.cold else None


def _recovery(fault: str, attr: str) -> Getter:
    def get(r: KeeperRound) -> float | None:
        found = r.recoveries.get(fault)
        return getattr(found, attr) if found else None

    return get


def _idle(attr: str, kind: str | None = None) -> Getter:
    def get(r: KeeperRound) -> float | None:
        if r.idle is None:
            return None
        value = getattr(r.idle, attr)
        return value.get(kind, 0.0) if kind else value

    return get


def _row(result, label, get, *, worst=False, **extra) -> Row:
    pick = max if worst else _median
    ours = result.values(OURS, get)
    theirs = result.values(IBEAM, get)
    return Row(
        label,
        pick(ours) if ours else None,
        pick(theirs) if theirs else None,
        **extra,
    )


def _login_values(result: BenchResult, keeper: str) -> list[float]:
    return [v for r in result.rounds if r.keeper == keeper for v in r.logins()]


def build_rows(result: BenchResult) -> list[Row]:
    """The table, top to bottom, with each goal judged."""
    cold_floor = result.floor(lambda f: f.cold_start_s)
    relogin_floor = result.floor(lambda f: f.relogin_s)
    logins = Row(
        "Login alone: browser start to `Client login succeeds` (s)",
        _median(_login_values(result, OURS)),
        _median(_login_values(result, IBEAM)),
    )
    rows = [
        _judge_cold(
            _row(result, "Cold start to ready (s)", _cold("total_s")), cold_floor
        ),
        _row(result, "… gateway listening, from start (s)", _cold("gateway_up_s")),
        _row(
            result, "… first browser process, from start (s)", _cold("browser_start_s")
        ),
        _row(result, "… login success to usable (s)", _cold("auth_after_login_s")),
    ]
    for fault, name in (
        ("expire", "SSO session expired"),
        ("compete", "competing session"),
    ):
        total = _row(result, f"Recovery, {name} (s)", _recovery(fault, "total_s"))
        rows.append(_judge_third(total))
        rows.append(
            _row(
                result,
                "… detection: fault to first request (s)",
                _recovery(fault, "detect_s"),
            )
        )
        repair = _row(
            result,
            "… repair: first request to usable (s)",
            _recovery(fault, "repair_s"),
        )
        if fault == "expire":
            repair.floor = relogin_floor
        rows.append(repair)
    rows.append(logins)
    rows.extend(_idle_rows(result))
    return rows


def _idle_rows(result: BenchResult) -> list[Row]:
    memory = _row(
        result,
        "Idle memory, RSS of the keeper's processes (MiB)",
        _idle("rss_mib"),
        digits=1,
    )
    memory.floor = result.floor(lambda f: f.python_rss_mib or 0.0) or None
    memory.met = _at_most(memory.ours, memory.ibeam, 0.5)
    memory.goal = _verdict("≤ 1/2 of IBeam", memory.met, memory.ratio, "")
    cpu = _row(result, "Idle CPU (% of one core)", _idle("cpu_percent"))
    browsers = _row(
        result,
        "Browser/driver/Xvfb processes at idle (most seen)",
        _idle("browsers"),
        worst=True,
        digits=0,
    )
    browsers.met = browsers.ours == 0 if browsers.ours is not None else None
    browsers.goal = _verdict("none alive", browsers.met, None, "")
    rows = [memory, cpu, browsers]
    limits = (
        ("Requests to the gateway per minute at idle", "total", None),
        ("… tickle per minute (IBKR: ≤ 60)", "tickle", TICKLE_LIMIT_PER_MIN),
        ("… sso/validate per minute (IBKR: ≤ 1)", "validate", VALIDATE_LIMIT_PER_MIN),
        ("… auth/status per minute (IBKR: no limit of its own)", "status", None),
    )
    for label, kind, limit in limits:
        row = _row(result, label, _idle("per_minute", kind), digits=1)
        if limit is not None:
            _judge_limit(row, limit)
        rows.append(row)
    peak = _row(
        result,
        "… most requests in one second (IBKR: ≤ 10)",
        _idle("peak_per_second"),
        worst=True,
        digits=1,
    )
    rows.append(_judge_limit(peak, OVERALL_LIMIT_PER_S))
    return rows


def _at_most(ours: float | None, theirs: float | None, share: float) -> bool | None:
    if ours is None or theirs is None:
        return None
    return ours <= share * theirs


def _verdict(goal: str, met: bool | None, value: float | None, unit: str) -> str:
    if met is None:
        return f"{goal}: no data"
    shown = f" ({value:.2f}{unit})" if value is not None else ""
    return f"{goal}: {'met' if met else 'missed'}{shown}"


def _judge_third(row: Row) -> Row:
    row.met = _at_most(row.ours, row.ibeam, 1 / 3)
    row.goal = _verdict("≤ 1/3 of IBeam", row.met, row.ratio, "")
    return row


def _judge_cold(row: Row, floor: float | None) -> Row:
    row.floor = floor
    _judge_third(row)
    to_floor = row.ours / floor if row.ours is not None and floor else None
    near = to_floor <= 1.5 if to_floor is not None else None
    row.goal += "; " + _verdict("≤ 1.5× floor", near, to_floor, "×")
    if row.met is not None and near is not None:
        row.met = row.met and near
    return row


def _judge_limit(row: Row, limit: float) -> Row:
    row.met = row.ours <= limit if row.ours is not None else None
    row.goal = f"ours ≤ {limit:g}: " + (
        "no data" if row.met is None else ("met" if row.met else "missed")
    )
    if row.ibeam is not None and row.ibeam > limit:
        row.goal += "; IBeam over"
    return row


# -- rendering ----------------------------------------------------------------


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_table(rows: list[Row]) -> str:
    """One Markdown table: figure, ours, IBeam, ratio, floor, goal."""
    lines = [
        f"| figure | ours | IBeam {IBEAM_VERSION} | ours/IBeam | floor | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        ratio = _cell(row.ratio, 2)
        floor = _cell(row.floor, 2) if row.floor is not None else ""
        lines.append(
            f"| {row.label} | {_cell(row.ours, row.digits)} | "
            f"{_cell(row.ibeam, row.digits)} | {ratio} | {floor} | {row.goal} |"
        )
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_rounds(result: BenchResult) -> str:
    """Every round's raw values, one line per keeper and round."""
    lines = [
        "| round | keeper | cold start | gw up | browser | login | to usable | "
        "expiry (detect / repair) | compete (detect / repair) | RSS MiB | CPU % | "
        "req/min | notes |",
        "|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for r in result.rounds:
        cold = r.cold
        rec = [r.recoveries.get(f) for f in ("expire", "compete")]
        recs = [
            "-"
            if x is None
            else f"{x.total_s:.2f} ({_fmt(x.detect_s)} / {_fmt(x.repair_s)})"
            for x in rec
        ]
        idle = r.idle
        notes = "; ".join(r.errors + [f"killed {k}" for k in r.killed]) or ""
        lines.append(
            f"| {r.round} | {r.keeper} | {_fmt(cold and cold.total_s)} | "
            f"{_fmt(cold and cold.gateway_up_s)} | "
            f"{_fmt(cold and cold.browser_start_s)} | {_fmt(cold and cold.login_s)} | "
            f"{_fmt(cold and cold.auth_after_login_s)} | {recs[0]} | {recs[1]} | "
            f"{_fmt(idle and idle.rss_mib, 1)} | {_fmt(idle and idle.cpu_percent)} | "
            f"{_fmt(idle and idle.per_minute['total'], 1)} | {notes} |"
        )
    return "\n".join(lines)


def render_floors(result: BenchResult) -> str:
    lines = [
        "| round | listen (s) | authDelay (s) | login page (s) | floor (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for number, f in enumerate(result.floors, 1):
        lines.append(
            f"| {number} | {f.listen_s:.3f} | {f.auth_delay_s:.3f} | "
            f"{f.page_s:.3f} | {f.cold_start_s:.3f} |"
        )
    return "\n".join(lines)
