"""The soak, short: two minutes of random faults keep every safety property.

`make soak` runs the same tool for ten minutes (docs/reliability.md).  This test
asserts what must hold whatever the speed: the account is never locked, the
failure budget is never exhausted (spurious bad-password answers, the only
injected fault that spends it, come one at a time while it is untouched), no
browser, driver or display process is left, and the agent's memory, open files
and threads stay flat.  The share of time ready and the outages are printed,
not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from soak.figures import FLAT_OPEN_FILES, FLAT_RSS_MIB, FLAT_THREADS
from tests.support.agent import REPO
from tests.support.needs import require_binaries

pytestmark = pytest.mark.soak

SEED = 11
DURATION_S = 120


@pytest.mark.timeout(900)
def test_soak_short_keeps_the_safety_properties(tmp_path):
    require_binaries("chromium", "chromedriver", "Xvfb")
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "soak",
            f"--seed={SEED}",
            f"--duration={DURATION_S}",
            "--mean-gap=6",
            f"--json={out}",
            f"--workdir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
    )
    print(done.stdout)
    assert out.exists(), done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["violations"] == [], done.stdout + done.stderr
    assert done.returncode == 0, done.stderr

    assert figures["faults_injected"] >= 8
    assert figures["full_logins"] >= 2
    assert not figures["account_locked"]
    assert not figures["budget_exhausted"]
    assert figures["budget_high_water"] < figures["budget_limit"]
    assert figures["budget_limit"] < figures["lockout_after"]
    assert figures["leftovers"] == []
    start, end = figures["start_usage"], figures["end_usage"]
    assert end["open_files"] <= start["open_files"] + FLAT_OPEN_FILES
    assert end["threads"] <= start["threads"] + FLAT_THREADS
    assert end["rss_mib"] <= start["rss_mib"] + FLAT_RSS_MIB
