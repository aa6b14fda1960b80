"""docs/performance.md: the table, a commentary written from the numbers, the
machine, the method, and every round's raw values."""

from __future__ import annotations

from bench import IBEAM_VERSION
from bench.report import (
    IBEAM,
    OURS,
    VALIDATE_LIMIT_PER_MIN,
    BenchResult,
    Row,
    render_floors,
    render_rounds,
    render_table,
)


def _find(rows: list[Row], start: str) -> Row:
    return next(row for row in rows if row.label.startswith(start))


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def commentary(result: BenchResult, rows: list[Row]) -> list[str]:
    """Plain sentences, each read off the table."""
    judged = [row for row in rows if row.met is not None]
    missed = [row.label for row in judged if not row.met]
    lines = [
        f"Goals met: {len(judged) - len(missed)} of {len(judged)}."
        + (f" Missed: {'; '.join(missed)}." if missed else "")
    ]
    lines += _cold_lines(result, rows)
    lines += _recovery_lines(result, rows)
    lines += _idle_lines(result, rows)
    failed = [r for r in result.rounds if r.errors]
    for r in failed:
        lines.append(
            f"Round {r.round}, {r.keeper}: {'; '.join(r.errors)} (its later figures "
            "are missing from that round)."
        )
    return lines


def _cold_lines(result: BenchResult, rows: list[Row]) -> list[str]:
    cold = _find(rows, "Cold start")
    up = _find(rows, "… gateway listening")
    browser = _find(rows, "… first browser")
    after = _find(rows, "… login success")
    login = _find(rows, "Login alone")
    floor = result.floors[0] if result.floors else None
    to_floor = cold.ours / cold.floor if cold.ours and cold.floor else None
    lines = [
        f"Cold start: ours {_s(cold.ours)}, IBeam {_s(cold.ibeam)} "
        f"(ours/IBeam {_times(cold.ratio)}); the floor here is {_s(cold.floor)}, "
        f"so ours takes {_times(to_floor)} the floor.",
    ]
    for name, pick in ((OURS, "ours"), (IBEAM, "ibeam")):
        lines.append(
            f"Where {name}'s cold start goes: gateway listening after "
            f"{_s(getattr(up, pick))}, first browser process after "
            f"{_s(getattr(browser, pick))}, login {_s(getattr(login, pick))}, "
            f"usable {_s(getattr(after, pick))} after the login."
        )
    for name, pick in ((OURS, "ours"), (IBEAM, "ibeam")):
        gap = _gap(getattr(browser, pick), getattr(up, pick))
        if gap is None:
            continue
        if gap < 0:
            lines.append(
                f"{name} starts its browser {-gap:.2f} s before the gateway listens "
                "(browser start overlaps the gateway's boot)."
            )
        else:
            lines.append(
                f"{name} starts its browser {gap:.2f} s after the gateway listens "
                "(browser start follows the gateway's boot)."
            )
    if floor is not None:
        lines.append(
            f"The floor is the simulator's own start ({floor.listen_s:.2f} s to "
            f"listen in round 1) plus authDelay ({floor.auth_delay_s:.2f} s, "
            "conf.yaml's default) plus one login page round trip "
            f"({floor.page_s * 1000:.0f} ms): a keeper that started its browser while "
            "the gateway boots and logged in instantly would still pay it."
        )
    lines.append(
        "IBeam's login includes its IBEAM_MIN_PRESUBMIT_BUFFER, a fixed 5 s wait "
        "before it submits the form (default settings)."
    )
    return lines


def _gap(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    return later - earlier


def _recovery_lines(result: BenchResult, rows: list[Row]) -> list[str]:
    lines = []
    half = result.interval / 2
    for name in ("SSO session expired", "competing session"):
        total = _find(rows, f"Recovery, {name}")
        index = rows.index(total)
        detect, repair = rows[index + 1], rows[index + 2]
        lines.append(
            f"Recovery, {name}: ours {_s(total.ours)}, IBeam {_s(total.ibeam)} "
            f"({_times(total.ratio)}). Detection {_s(detect.ours)} against "
            f"{_s(detect.ibeam)}, repair {_s(repair.ours)} against "
            f"{_s(repair.ibeam)} ({_times(repair.ratio)})."
        )
        if total.ibeam and detect.ours and detect.ours > total.ibeam / 3:
            lines.append(
                f"For {name} the 1/3 goal cannot be met at this interval: the fault "
                f"lands {half:g} s before the next scheduled check, and our "
                f"detection alone ({_s(detect.ours)}) exceeds a third of IBeam's "
                "whole recovery."
            )
    return lines


def _idle_lines(result: BenchResult, rows: list[Row]) -> list[str]:
    memory = _find(rows, "Idle memory")
    cpu = _find(rows, "Idle CPU")
    browsers = _find(rows, "Browser/driver")
    validate = _find(rows, "… sso/validate")
    lines = []
    if memory.floor and memory.ibeam:
        reach = "below" if memory.floor > memory.ibeam / 2 else "above"
        lines.append(
            f"A bare Python with only the standard library a keeper needs (TLS, "
            f"HTTP, JSON, logging) holds {memory.floor:.1f} MiB here; half of "
            f"IBeam's idle memory is {memory.ibeam / 2:.1f} MiB, {reach} that floor."
        )
    lines += [
        f"Idle: ours holds {memory.ours or 0:.1f} MiB against IBeam's "
        f"{memory.ibeam or 0:.1f} MiB ({_times(memory.ratio)}), uses "
        f"{cpu.ours or 0:.2f}% of a core against {cpu.ibeam or 0:.2f}%, and keeps "
        f"{browsers.ours if browsers.ours is not None else 'n/a':} browser "
        f"processes alive against IBeam's "
        f"{browsers.ibeam if browsers.ibeam is not None else 'n/a'}."
    ]
    per_check = 60.0 / result.interval
    for name, value in ((OURS, validate.ours), (IBEAM, validate.ibeam)):
        if value is None or value <= VALIDATE_LIMIT_PER_MIN:
            continue
        every = (
            " (one per maintenance run)"
            if abs(value - per_check) <= 0.2 * per_check
            else ""
        )
        lines.append(
            f"{name} sent {value:.1f} sso/validate per minute{every}, above IBKR's "
            f"limit of {VALIDATE_LIMIT_PER_MIN:g} per minute; the simulator answers "
            "429 once the burst allowance is spent."
        )
    status = _find(rows, "… auth/status")
    if status.ours:
        lines.append(
            f"Between maintenance checks ours reads iserver/auth/status "
            f"({status.ours:.1f} a minute: IBEAM_STATUS_INTERVAL, 2 s by default); "
            "that is how it notices a lost or taken session within seconds, where "
            "IBeam looks only at its maintenance check. IBEAM_STATUS_INTERVAL=0 "
            "turns the reads off; detection then waits for the check, as IBeam's."
        )
    return lines


def _method(result: BenchResult) -> list[str]:
    interval = result.interval
    return [
        f"- {result.round_count} round(s); in each, the simulator's floor is "
        "measured first, then both keepers run one after the other (never at the "
        "same time; the order alternates by round), each against a freshly "
        "installed simulator with the same default settings (IBKR's default "
        "conf.yaml, demo account, no fault knobs). Everything is killed after "
        "each keeper (its process group, the gateway by its directory, and every "
        "process carrying the round's environment token).",
        f"- Maintenance interval {interval:g} s for both. Each keeper starts the "
        "gateway itself: it is not running at t0.",
        "- Readiness is the simulator's `GET /sim/state` (authenticated, connected, "
        "not competing), polled every 50 ms by the bench; the keepers' own health "
        "endpoints are not used.",
        "- Cold start: from launching the keeper to readiness. Sub-rows: the "
        "gateway port accepting a TCP connection, the start time (psutil) of the "
        "first Chromium process in the keeper's tree (not chromedriver, not "
        "`chromium --version`), the "
        "`login_successes` counter increasing, readiness.",
        "- Login alone: from the first Chromium process of a login to "
        "`login_successes` increasing (the simulator counts the login when it serves "
        "`Client login succeeds`); the median over the cold-start and the expiry "
        "logins of every round. The simulator keeps no timestamps, so this is "
        "measured from outside, to the 50 ms poll.",
        "- Recovery: once ready, the bench waits for a scheduled maintenance "
        "tickle (one that follows half an interval without another tickle), then "
        f"{interval / 2:g} s more (half the interval), then expires the SSO session "
        "(`POST /sim/session/expire`), and times until readiness; the same again "
        "with `POST /sim/session/compete`. Detection is the first request the "
        "gateway receives after the fault; repair is the rest.",
        f"- Idle: a {result.idle_s:g} s window opening 1 s after the first "
        "scheduled maintenance check that follows the cold start's readiness "
        "(what a login brings with it, such as a first sso/validate, is not "
        "steady state). "
        "RSS is summed over the keeper and every descendant except the gateway "
        "(median of 1 s samples); CPU is the tree's user+system time over the "
        "window (reaped children included); browser processes are chromium*, "
        "chromedriver and Xvfb in the tree; requests are the simulator's per-route "
        "counters diffed over the window.",
        "- Memory floor: the resident memory of the agent's Python interpreter "
        "with only `ssl`, `http.client`, `http.server`, `json`, `logging`, "
        "`threading` and `subprocess` imported.",
        "- Floors: `bin/run.sh` started by the bench, time until the port accepts "
        "a connection, plus the simulator's authDelay, plus one GET of the login "
        "page on a new TLS connection. The repair floor of an expiry is authDelay "
        "plus the page round trip (a fresh login on a running gateway).",
        "- Ratios are ours/IBeam of the medians; the goal column judges ours.",
        f"- Simulator settings (both keepers): {_sim_settings(result)}.",
    ]


SIM_KNOBS = (
    "auth_delay_ms",
    "pacing",
    "pacing_burst",
    "sso_ttl_s",
    "idle_timeout_s",
    "login_page",
    "nightly_reset",
)


def _sim_settings(result: BenchResult) -> str:
    if not result.floors:
        return "not read (no floor was measured)"
    faults = result.floors[0].faults
    shown = [f"{knob}={faults[knob]}" for knob in SIM_KNOBS if knob in faults]
    delay = result.floors[0].auth_delay_s * 1000
    return (
        f"conf.yaml authDelay {delay:.0f} ms (IBKR's default file), fault knobs at "
        f"their defaults: {', '.join(shown)}"
    )


def render_page(result: BenchResult, rows: list[Row]) -> str:
    """The whole of docs/performance.md."""
    machine = "\n".join(f"- {key}: {value}" for key, value in result.machine.items())
    loads = "\n".join(f"- {line}" for line in result.loads)
    notes = "\n".join(f"- {line}" for line in result.notes)
    mode = " (quick mode: not a benchmark result)" if result.quick else ""
    parts = [
        f"# Performance: the agent against IBeam {IBEAM_VERSION}",
        "",
        "Written by `make bench` (`python -m bench`); run it again rather than "
        "editing this page.",
        "",
        f"Run {result.started} to {result.finished}, {result.round_count} round(s), "
        f"maintenance interval {result.interval:g} s, idle window "
        f"{result.idle_s:g} s{mode}.",
        "",
        "## Results (medians)",
        "",
        render_table(rows),
        "",
        "## Commentary",
        "",
        "\n".join(f"- {line}" for line in commentary(result, rows)),
        "",
        "## Machine",
        "",
        machine,
        "",
        "Load average (1 / 5 / 15 min):",
        "",
        loads,
        "",
        "## Method",
        "",
        "\n".join(_method(result)),
        "",
        "Settings given to the keepers (everything else is each keeper's default):",
        "",
        notes,
        "",
        "## Every round",
        "",
        render_rounds(result),
        "",
        "Floors:",
        "",
        render_floors(result),
        "",
    ]
    return "\n".join(parts)
