"""Benchmarks of the agent against IBeam 0.5.12, on the same gateway simulator.

`python -m bench` (or `make bench`) runs both keepers one after the other,
several rounds, each against a fresh simulator with the same settings, prints
one table (figure, ours, IBeam, ratio, floor, goal) and writes it, with the
machine it ran on, to docs/performance.md.  See docs/performance.md "Method".
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IBEAM_VERSION = "0.5.12"
