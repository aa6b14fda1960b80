"""One soak run: a simulated gateway, the real agent, faults and a watcher.

The agent runs standalone (`python -m ibeam_agents`, the same process the
tests use, tests/support/agent.py), starts the simulator as its gateway and
logs in with real Chromium under its own Xvfb; the account asks for an SMS
code, which a small command reads from the simulator (what a phone relay
does).  A sampler thread polls the agent's /status and the simulator every
quarter second; the main thread injects faults until the time is up.
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from gateway_sim.harness import SimGateway, SimGatewayError
from soak.faults import FaultPlan
from tests.support import procs
from tests.support.agent import AgentProcess, kill_gateways

USER, PASSWORD = "soakuser", "soak-P$w\"d#1\\a&b|c'z"
SIM_COUNTERS = (
    "login_attempts",
    "login_successes",
    "login_failures",
    "spurious_failures",
    "codes_sent",
    "pushes_sent",
)


@dataclass
class SoakOptions:
    seed: int = 1
    duration_s: float = 600.0
    mean_gap_s: float = 8.0
    budget: int = 3  # IBEAM_MAX_FAILED_AUTH
    lockout_after: int = 5  # the simulator locks the account after this many
    workdir: Path = Path(".soak")


@dataclass
class Samples:
    """What the sampler saw; every time is time.monotonic()."""

    ready: list[tuple[float, bool]] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    budget_high: int = 0
    budget_exhausted: bool = False
    locked: bool = False
    sim_totals: dict[str, int] = field(default_factory=dict)
    sim_last: dict[int, dict[str, int]] = field(default_factory=dict)
    gateway_pids: list[int] = field(default_factory=list)
    browsers_while_ready: int = 0
    last_status: dict = field(default_factory=dict)


def code_command(control_port: int) -> str:
    """A command that prints the last SMS code the simulator sent."""
    script = (
        "import json,urllib.request;"
        f"u='http://127.0.0.1:{control_port}/sim/2fa/last_code';"
        "print(json.load(urllib.request.urlopen(u,timeout=5))['code'])"
    )
    return shlex.join([sys.executable, "-c", script])


def agent_settings(options: SoakOptions, sim: SimGateway) -> dict[str, str]:
    """Short intervals and backoffs: hours of events in minutes."""
    return {
        "IBEAM_LOG_LEVEL": "INFO",
        "IBEAM_MAINTENANCE_INTERVAL": "1",
        "IBEAM_BACKOFF_MIN": "1",
        "IBEAM_BACKOFF_MAX": "8",
        "IBEAM_REQUEST_TIMEOUT": "2",
        "IBEAM_AUTH_SETTLE_TIMEOUT": "10",
        "IBEAM_TRANSIENT_GRACE": "15",
        "IBEAM_COMPETE_MAX_PER_HOUR": "60",
        "IBEAM_PAGE_LOAD_TIMEOUT": "8",
        "IBEAM_OAUTH_TIMEOUT": "8",
        "IBEAM_MAX_FAILED_AUTH": str(options.budget),
        "IBEAM_TWO_FA_HANDLER": "COMMAND",
        "IBEAM_TWO_FA_COMMAND": code_command(sim.control_port),
    }


class Sampler(threading.Thread):
    """Poll the agent and the simulator until stopped."""

    def __init__(self, agent: AgentProcess, plan: FaultPlan, token: str) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.agent, self.sim, self.plan = agent, plan.sim, plan
        self.token = token
        self.samples = Samples()
        self.halt = threading.Event()
        self._tick = 0

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(0.25)

    def sample(self) -> None:
        self._tick += 1
        status = self.agent.status()
        samples = self.samples
        now = time.monotonic()
        samples.ready.append((now, bool(status.get("ready"))))
        if status:
            samples.last_status = status
            state = status.get("state", "?")
            samples.states[state] = samples.states.get(state, 0) + 1
            budget = (status.get("failures") or {}).get("budget") or {}
            samples.budget_high = max(samples.budget_high, budget.get("spent", 0))
            limit = budget.get("limit", 0)
            if limit and budget.get("spent", 0) >= limit:
                samples.budget_exhausted = True
            samples.locked |= bool(budget.get("locked"))
            if state == "READY" and self._tick % 4 == 0:
                samples.browsers_while_ready = max(
                    samples.browsers_while_ready, len(self.browsers())
                )
        if self._tick % 4 == 0:
            self.sample_sim()

    def sample_sim(self) -> None:
        try:
            state = self.sim.state()
        except SimGatewayError:
            return
        samples = self.samples
        pid = state["pid"]
        if pid not in samples.gateway_pids:
            if samples.gateway_pids:
                try:
                    self.plan.reapply()
                except SimGatewayError:
                    return
            samples.gateway_pids.append(pid)
        samples.locked |= bool(state["locked"])
        samples.sim_last[pid] = {key: state[key] for key in SIM_COUNTERS}
        samples.sim_totals = {
            key: sum(last[key] for last in samples.sim_last.values())
            for key in SIM_COUNTERS
        }

    def browsers(self) -> list[psutil.Process]:
        """Browser, driver and display processes of this run alive now."""
        snap = procs.Snapshot(taken_at=0.0, pids=frozenset(), token=self.token)
        return procs.leftovers(snap)


def usage(pid: int) -> dict[str, float]:
    proc = psutil.Process(pid)
    return {
        "rss_mib": round(proc.memory_info().rss / (1 << 20), 1),
        "open_files": proc.num_fds(),
        "threads": proc.num_threads(),
    }


def metrics(agent: AgentProcess) -> dict[str, dict[str, float]]:
    """The agent's counters by label, from /metrics."""
    code, body = agent.get("/metrics")
    found: dict[str, dict[str, float]] = {}
    if code != 200:
        return found
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                label = ",".join(f"{v}" for v in sample.labels.values()) or "-"
                found.setdefault(sample.name, {})[label] = sample.value
    return found


def run_soak(options: SoakOptions, log=print) -> dict:
    """Run the soak; return its raw results (see soak.figures)."""
    workdir = options.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    account = {"user": USER, "password": PASSWORD, "second_factor": "sms"}
    faults = {"auth_delay_ms": 300, "lockout_after": options.lockout_after}
    sim = SimGateway(workdir / "gw", accounts=[account], faults=faults).install()
    plan = FaultPlan(sim, options.seed, options.mean_gap_s)
    result: dict = {"options": {k: str(v) for k, v in vars(options).items()}}
    with procs.tracking() as snap:
        agent = AgentProcess(
            sim,
            workdir / "agent",
            env=agent_settings(options, sim),
            account=USER,
            password=PASSWORD,
        )
        sampler = Sampler(agent, plan, snap.token)
        try:
            agent.start()
            sampler.start()
            result.update(drive(agent, plan, sampler, options, log))
        finally:
            sampler.halt.set()
            sampler.join(10)
            code, seconds = agent.terminate() if agent.alive() else (None, 0.0)
            result["exit"] = {"code": code, "seconds": round(seconds, 1)}
            agent.kill()
            kill_gateways(sim.root)
        time.sleep(1)
        left = procs.leftovers(snap)
        result["leftovers"] = procs.describe(left).splitlines()
        procs.kill(left)
    result["samples"] = sampler.samples
    result["faults"] = {"done": dict(plan.done), "skipped": dict(plan.skipped)}
    result["clock_offset_s"] = plan.clock_offset_s
    result["log_tail"] = agent.log()[-4000:]
    return result


def drive(agent, plan: FaultPlan, sampler: Sampler, options: SoakOptions, log):
    """Warm up, measure, inject faults until the time is up, measure again."""
    agent.wait_ready(120)
    log(f"soak: agent ready; injecting faults for {options.duration_s:g} s")
    time.sleep(2)
    start_usage = usage(agent.process.pid)
    started = time.monotonic()
    sampler.samples.ready.clear()
    deadline = started + options.duration_s
    next_fault = started + plan.next_gap()
    while time.monotonic() < deadline:
        if not agent.alive():
            break
        plan.restore_due()
        if time.monotonic() >= next_fault:
            name = plan.draw()
            if plan.inject(name, sampler.samples.last_status):
                log(f"soak: +{time.monotonic() - started:6.1f} s fault {name}")
            next_fault = time.monotonic() + plan.next_gap()
        time.sleep(0.1)
    # Let the last fault settle so the end figures compare like with like.
    settle_until = time.monotonic() + 60
    while time.monotonic() < settle_until and agent.alive():
        if agent.status().get("ready"):
            break
        time.sleep(0.5)
    time.sleep(2)
    return {
        "wall_s": round(time.monotonic() - started, 1),
        "start_usage": start_usage,
        "end_usage": usage(agent.process.pid) if agent.alive() else {},
        "alive_at_end": agent.alive(),
        "ready_at_end": bool(agent.status().get("ready")),
        "metrics": metrics(agent),
        "status": json.loads(json.dumps(agent.status())),
    }
