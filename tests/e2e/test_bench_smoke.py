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
