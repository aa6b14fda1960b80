"""Figures of a soak run, the safety verdict, and the printed report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Growth of the agent's resources over a run that still counts as flat.
FLAT_OPEN_FILES = 5
FLAT_THREADS = 3
FLAT_RSS_MIB = 40.0


@dataclass
class Figures:
    seed: int
    wall_s: float
    faults_injected: int
    faults: dict[str, int]
    faults_skipped: dict[str, int]
    simulated_days: float
    ready_share: float
    longest_outage_s: float
    outages: int
    full_logins: int
    logins_by_outcome: dict[str, float]
    login_attempts_seen_by_gateway: int
    second_factor_prompts: int
    gateway_processes: int
    gateway_restarts_by_agent: dict[str, float]
    budget_high_water: int
    budget_limit: int
    lockout_after: int
    budget_exhausted: bool
    account_locked: bool
    browsers_while_ready: int
    leftovers: list[str]
    start_usage: dict[str, float]
    end_usage: dict[str, float]
    states_seen: dict[str, int]
    exit_code: int | None
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def outage_figures(ready: list[tuple[float, bool]]) -> tuple[float, float, int]:
    """(share of time ready, longest not-ready stretch, number of stretches)."""
    if len(ready) < 2:
        return 0.0, 0.0, 0
    total = ready[-1][0] - ready[0][0]
    up = longest = current = 0.0
    stretches = 0
    for (at, ok), (nxt, _) in zip(ready, ready[1:], strict=False):
        span = nxt - at
        if ok:
            up += span
            current = 0.0
            continue
        if current == 0.0:
            stretches += 1
        current += span
        longest = max(longest, current)
    return (up / total if total else 0.0), longest, stretches


def compute(result: dict, options) -> Figures:
    samples = result["samples"]
    share, longest, stretches = outage_figures(samples.ready)
    by_outcome = result.get("metrics", {}).get("ibeam_logins_total", {})
    restarts = result.get("metrics", {}).get("ibeam_gateway_restarts_total", {})
    budget = ((result.get("status") or {}).get("failures") or {}).get("budget") or {}
    days = (result["clock_offset_s"] + result.get("wall_s", 0.0)) / 86400
    figures = Figures(
        seed=options.seed,
        wall_s=result.get("wall_s", 0.0),
        faults_injected=sum(result["faults"]["done"].values()),
        faults=result["faults"]["done"],
        faults_skipped=result["faults"]["skipped"],
        simulated_days=round(days, 2),
        ready_share=round(share, 4),
        longest_outage_s=round(longest, 1),
        outages=stretches,
        # NeverAuthenticated is recorded again for a login already counted.
        full_logins=int(
            sum(by_outcome.values()) - by_outcome.get("NeverAuthenticated", 0)
        ),
        logins_by_outcome=by_outcome,
        login_attempts_seen_by_gateway=samples.sim_totals.get("login_attempts", 0),
        second_factor_prompts=samples.sim_totals.get("codes_sent", 0)
        + samples.sim_totals.get("pushes_sent", 0),
        gateway_processes=len(samples.gateway_pids),
        gateway_restarts_by_agent=restarts,
        budget_high_water=samples.budget_high,
        budget_limit=int(budget.get("limit", options.budget)),
        lockout_after=options.lockout_after,
        budget_exhausted=samples.budget_exhausted,
        account_locked=samples.locked,
        browsers_while_ready=samples.browsers_while_ready,
        leftovers=result["leftovers"],
        start_usage=result.get("start_usage", {}),
        end_usage=result.get("end_usage", {}),
        states_seen=samples.states,
        exit_code=result["exit"]["code"],
    )
    figures.violations = violations(figures, result)
    return figures


def violations(f: Figures, result: dict) -> list[str]:
    """The safety properties a soak must keep, whatever its figures of speed."""
    found = []
    if f.account_locked:
        found.append("the account was locked")
    if f.budget_exhausted or f.budget_high_water >= f.budget_limit:
        found.append(f"the failure budget was exhausted ({f.budget_high_water})")
    if f.budget_limit >= f.lockout_after:
        found.append("the budget is not below the simulator's lock-out")
    if f.leftovers:
        found.append(f"{len(f.leftovers)} browser/driver/display processes left")
    if not result.get("alive_at_end"):
        found.append("the agent died during the run")
    if f.exit_code != 0:
        found.append(f"the agent exited with {f.exit_code} on SIGTERM")
    start, end = f.start_usage, f.end_usage
    if start and end:
        if end["open_files"] > start["open_files"] + FLAT_OPEN_FILES:
            found.append(
                f"open files grew {start['open_files']} -> {end['open_files']}"
            )
        if end["threads"] > start["threads"] + FLAT_THREADS:
            found.append(f"threads grew {start['threads']} -> {end['threads']}")
        if end["rss_mib"] > start["rss_mib"] + FLAT_RSS_MIB:
            found.append(f"memory grew {start['rss_mib']} -> {end['rss_mib']} MiB")
    return found


def report(f: Figures) -> str:
    """The figures as the lines `make soak` prints."""
    pct = f"{100 * f.ready_share:.1f} %"
    faults = ", ".join(f"{k} {v}" for k, v in sorted(f.faults.items()))
    outcomes = ", ".join(f"{k} {v:g}" for k, v in sorted(f.logins_by_outcome.items()))
    start, end = f.start_usage, f.end_usage
    lines = [
        f"soak seed {f.seed}: {f.wall_s:.0f} s wall, {f.faults_injected} faults, "
        f"simulated clock moved {f.simulated_days:.1f} days",
        f"  faults: {faults}",
        f"  ready: {pct} of the time; longest outage {f.longest_outage_s:.1f} s "
        f"({f.outages} outages)",
        f"  full logins: {f.full_logins} ({outcomes}); the gateway saw "
        f"{f.login_attempts_seen_by_gateway} password submissions",
        f"  second-factor prompts: {f.second_factor_prompts}",
        f"  gateway processes: {f.gateway_processes}; restarts ordered by the agent: "
        f"{int(sum(f.gateway_restarts_by_agent.values()))}",
        f"  failure budget high-water: {f.budget_high_water} of {f.budget_limit} "
        f"(account locks at {f.lockout_after}); locked: {f.account_locked}",
        f"  browser/driver/display left: {len(f.leftovers)} "
        f"(max alive while READY: {f.browsers_while_ready})",
        f"  agent rss {start.get('rss_mib')} -> {end.get('rss_mib')} MiB, open files "
        f"{start.get('open_files')} -> {end.get('open_files')}, threads "
        f"{start.get('threads')} -> {end.get('threads')}",
        "  verdict: " + ("safe" if not f.violations else "; ".join(f.violations)),
    ]
    return "\n".join(lines)
