"""The benchmark runs end to end in quick mode and produces its table and page.

Not a test of speed: the numbers are not checked, only that every figure was
measured for both keepers and that nothing the run started is left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import REPO
from bench.figures import ColdStart, Idle, KeeperRound, Recovery
from bench.probe import Floor
from bench.report import BenchResult, build_rows, render_table
from bench.venv import VenvError, ensure_ibeam
from tests.support import procs
from tests.support.needs import require, require_binaries

pytestmark = [pytest.mark.bench, pytest.mark.e2e]

FIGURES = (
    "Cold start to ready (s)",
    "Recovery, SSO session expired (s)",
    "Recovery, competing session (s)",
    "Login alone",
    "Idle memory",
    "Idle CPU",
    "Browser/driver/Xvfb processes at idle",
    "… tickle per minute",
    "… sso/validate per minute",
)


@pytest.fixture(scope="module")
def ibeam_venv():
    """IBeam 0.5.12's venv, built from PyPI the first time (then cached)."""
    require_binaries("chromium", "chromedriver", "Xvfb")
    try:
        ensure_ibeam()
    except VenvError as exc:
        require(False, f"IBeam 0.5.12 cannot be installed here: {exc}")


def _run_quick(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.timeout(1000)
def test_bench_quick_round_prints_table_and_writes_page(ibeam_venv, tmp_path):
    page = tmp_path / "performance.md"
    raw = tmp_path / "raw.json"
    with procs.tracking() as snap:
        done = _run_quick(tmp_path, "--output", str(page), "--json", str(raw))
    procs.assert_none_left(snap)
    assert done.returncode == 0, done.stderr[-4000:]

    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| figure | ours | IBeam 0.5.12 | ours/IBeam |")
    for figure in FIGURES:
        row = next((line for line in table if figure in line), None)
        assert row is not None, f"no row for {figure}"
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert "n/a" not in cells[1:3], row

    text = page.read_text()
    assert "## Results (medians)" in text and table[0] in text
    assert "quick mode" in text
    for heading in ("## Commentary", "## Machine", "## Method", "## Every round"):
        assert heading in text
    assert "Chromium" in text and "Load average" in text

    data = json.loads(raw.read_text())
    assert {r["keeper"] for r in data["rounds"]} == {"ours", "IBeam"}
    assert all(not r["errors"] and not r["killed"] for r in data["rounds"])


def test_bench_rejects_bad_option_with_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--rounds", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "bench: --rounds must be at least 1: got 0"
    assert done.stdout == ""


def _round(keeper: str, cold: float, recovery: float, rss: float, validate: float):
    per_minute = {"total": 6 + validate, "tickle": 6.0, "validate": validate}
    return KeeperRound(
        keeper,
        1,
        cold=ColdStart(cold, 1.0, 1.5, 2.0, 3.0),
        idle=Idle(60.0, rss, 0.5, 0, per_minute, 2.0),
        recoveries={
            fault: Recovery(fault, recovery, 5.0, recovery - 5.0, None, 0)
            for fault in ("expire", "compete")
        },
    )


def _result(rounds: list[KeeperRound]) -> BenchResult:
    floor = Floor(listen_s=0.5, auth_delay_s=3.0, page_s=0.1, faults={})
    return BenchResult(
        rounds=rounds,
        floors=[floor],
        interval=10.0,
        idle_s=60.0,
        round_count=1,
        quick=True,
        machine={},
        loads=[],
        started="",
        finished="",
        notes=[],
    )


def test_bench_table_judges_goals_from_the_medians():
    rows = build_rows(
        _result(
            [
                _round("ours", 5.0, 6.0, 40.0, 0.0),
                _round("IBeam", 18.0, 15.0, 100.0, 6.0),
            ]
        )
    )
    by_label = {row.label: row for row in rows}
    cold = by_label["Cold start to ready (s)"]
    assert cold.floor == pytest.approx(3.6)
    assert cold.met is True and "1.39×" in cold.goal
    expired = by_label["Recovery, SSO session expired (s)"]
    assert expired.met is False and "missed (0.40)" in expired.goal
    memory = next(row for row in rows if row.label.startswith("Idle memory"))
    assert memory.met is True
    validate = next(row for row in rows if "sso/validate" in row.label)
    assert validate.met is True and validate.goal.endswith("IBeam over")
    table = render_table(rows)
    assert table.count("\n") == len(rows) + 1


def test_bench_table_shows_missing_figures_as_not_available():
    rows = build_rows(_result([_round("ours", 5.0, 6.0, 40.0, 0.0)]))
    cold = rows[0]
    assert cold.ibeam is None and cold.met is None
    assert "no data" in cold.goal
    assert "| n/a |" in render_table(rows)
