"""`python -m bench`: run the rounds, print the table, write docs/performance.md.

Exit status: 0 when every figure was measured for both keepers (goals missed
or not: benchmarks are not tests), 1 when some figure is missing or the run
failed, 2 for a bad option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import REPO, machine
from bench.figures import KeeperRound, run_keeper_round
from bench.keepers import Keeper, ibeam, ours, settings_notes
from bench.page import render_page
from bench.probe import BenchTimeout, Floor, measure_floor
from bench.report import BenchResult, build_rows, render_table
from bench.venv import DEFAULT_VENV, VenvError, ensure_ibeam
from gateway_sim.harness import SimGatewayError

log = logging.getLogger("bench")

DEFAULT_OUTPUT = REPO / "docs" / "performance.md"
DEFAULT_ROUNDS = 5
DEFAULT_IDLE = 60.0
DEFAULT_INTERVAL = 10.0
QUICK_IDLE = 10.0
DEFAULT_LOAD_WAIT = 7200.0
LOAD_POLL = 30.0
NEEDED = ("/usr/bin/chromium", "/usr/bin/chromedriver")


class UsageError(Exception):
    """A bad option; the message names it and says what to give instead."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the agent against IBeam 0.5.12 on the simulator.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"rounds of both keepers (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: 1 round, 10 s idle window; writes no "
        "page unless --output is given",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=None,
        help=f"idle window in seconds (default {DEFAULT_IDLE:g})",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help="maintenance interval of both keepers, seconds "
        f"(default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="page to write (default docs/performance.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write every raw value to this JSON file",
    )
    parser.add_argument(
        "--ibeam-venv",
        type=Path,
        default=DEFAULT_VENV,
        help="IBeam's virtual environment (built when missing)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep simulators and keeper logs here (default: a "
        "temporary directory, removed afterwards)",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        default=None,
        metavar="LOAD",
        help="before each round, wait until the 1-minute load average is at most LOAD",
    )
    parser.add_argument(
        "--wait-load-max",
        type=float,
        default=DEFAULT_LOAD_WAIT,
        metavar="SECONDS",
        help="give up waiting for the load after this long and run the round "
        f"anyway, saying so (default {DEFAULT_LOAD_WAIT:g})",
    )
    return parser


def resolve(options: argparse.Namespace) -> argparse.Namespace:
    """Fill mode-dependent defaults and check the values."""
    if options.rounds is None:
        options.rounds = 1 if options.quick else DEFAULT_ROUNDS
    if options.idle is None:
        options.idle = QUICK_IDLE if options.quick else DEFAULT_IDLE
    if options.output is None and not options.quick:
        options.output = DEFAULT_OUTPUT
    if options.no_write:
        options.output = None
    if options.rounds < 1:
        raise UsageError(f"--rounds must be at least 1: got {options.rounds}")
    if not 2 <= options.interval <= 300:
        raise UsageError(
            f"--interval must be between 2 and 300 seconds: got {options.interval:g}"
        )
    if options.idle < 3:
        raise UsageError(f"--idle must be at least 3 seconds: got {options.idle:g}")
    if options.wait_load_max < 0:
        raise UsageError(
            f"--wait-load-max must not be negative: got {options.wait_load_max:g}"
        )
    if options.wait_load is not None and options.wait_load <= 0:
        raise UsageError(f"--wait-load must be positive: got {options.wait_load:g}")
    return options


def main(argv: list[str] | None = None) -> int:
    try:
        options = resolve(build_parser().parse_args(argv))
    except UsageError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(options)
    except KeyboardInterrupt:
        log.error("interrupted; every keeper of the current round was stopped")
        return 1
    except (VenvError, OSError) as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return 1


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(options: argparse.Namespace) -> int:
    missing = [path for path in NEEDED if not os.path.exists(path)]
    missing += [] if shutil.which("Xvfb") else ["Xvfb"]
    if missing:
        log.error("missing: %s; install chromium chromium-driver xvfb", missing)
        return 1
    keepers = [ours(), ibeam(ensure_ibeam(options.ibeam_venv))]
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="ibeam-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = _rounds(options, keepers, workdir)
    finally:
        if options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = build_rows(result)
    print(render_table(rows))
    if options.output is not None:
        _write(options.output, render_page(result, rows))
        log.info("wrote %s", options.output)
    if options.json is not None:
        _write(options.json, json.dumps(_raw(result), indent=1, default=str))
    complete = all(row.ours is not None and row.ibeam is not None for row in rows)
    if not complete:
        log.error("some figures were not measured (n/a): see the log above")
    return 0 if complete else 1


def _rounds(options, keepers: list[Keeper], workdir: Path) -> BenchResult:
    started = _now()
    loads = [f"start: {machine.load_average()}"]
    rounds: list[KeeperRound] = []
    floors: list[Floor] = []
    orders = []
    for number in range(1, options.rounds + 1):
        note = _wait_for_load(options.wait_load, options.wait_load_max)
        loads.append(f"round {number}: {machine.load_average()}{note}")
        log.info("round %d of %d", number, options.rounds)
        floor = _floor(workdir / f"r{number}-floor")
        if floor is not None:
            floors.append(floor)
        order = keepers if number % 2 else keepers[::-1]
        orders.append([k.name for k in order])
        for keeper in order:
            where = workdir / f"r{number}-{keeper.name.lower()}"
            rounds.append(
                run_keeper_round(keeper, where, number, options.interval, options.idle)
            )
    loads.append(f"end: {machine.load_average()}")
    return BenchResult(
        rounds=rounds,
        floors=floors,
        interval=options.interval,
        idle_s=options.idle,
        round_count=options.rounds,
        quick=options.quick,
        machine=machine.describe(keepers[1].python),
        loads=loads,
        started=started,
        finished=_now(),
        notes=settings_notes(options.interval),
        keeper_order=orders,
    )


def _floor(root: Path) -> Floor | None:
    try:
        floor = measure_floor(root)
    except (BenchTimeout, SimGatewayError) as exc:
        log.warning("floor not measured: %s", exc)
        return None
    log.info(
        "floor: listen %.3f s + authDelay %.3f s + page %.3f s",
        floor.listen_s,
        floor.auth_delay_s,
        floor.page_s,
    )
    return floor


def _wait_for_load(limit: float | None, longest: float) -> str:
    """Wait for a quiet machine; return a note when the wait was given up."""
    if limit is None:
        return ""
    deadline = time.monotonic() + longest
    while os.getloadavg()[0] > limit:
        if time.monotonic() >= deadline:
            log.warning(
                "load still above %g after %g s; running anyway", limit, longest
            )
            return f" (still above {limit:g} after waiting {longest:g} s)"
        log.info("load %s above %g; waiting", machine.load_average(), limit)
        time.sleep(LOAD_POLL)
    return ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _write(path: Path, text: str) -> None:
    """Replace path atomically: a half-written page is never left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def _raw(result: BenchResult) -> dict:
    return {
        "rounds": [dataclasses.asdict(r) for r in result.rounds],
        "floors": [dataclasses.asdict(f) for f in result.floors],
        "interval": result.interval,
        "idle_s": result.idle_s,
        "machine": result.machine,
        "loads": result.loads,
        "started": result.started,
        "finished": result.finished,
        "order": result.keeper_order,
    }
