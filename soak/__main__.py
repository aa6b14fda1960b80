"""`python -m soak`: a bounded soak run of the agent against the simulator."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from soak.figures import compute, report
from soak.run import SoakOptions, run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m soak",
        description="Run the agent against the simulator with faults injected at "
        "random from a seed; print the figures; exit 1 if a safety property broke.",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--duration", type=float, default=600, help="seconds of faults (600)"
    )
    parser.add_argument(
        "--mean-gap", type=float, default=8, help="mean seconds between faults (8)"
    )
    parser.add_argument("--budget", type=int, default=3, help="IBEAM_MAX_FAILED_AUTH")
    parser.add_argument(
        "--lockout-after", type=int, default=5, help="simulator lock-out (5)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--workdir", type=Path, help="keep the run's files here")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ibeam-soak-"))
    options = SoakOptions(
        seed=args.seed,
        duration_s=args.duration,
        mean_gap_s=args.mean_gap,
        budget=args.budget,
        lockout_after=args.lockout_after,
        workdir=workdir,
    )
    try:
        result = run_soak(options, log=lambda line: print(line, flush=True))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    figures = compute(result, options)
    print(report(figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures.as_dict(), indent=2) + "\n")
    if figures.violations:
        print(result["log_tail"], file=sys.stderr)
    return 1 if figures.violations else 0


if __name__ == "__main__":
    sys.exit(main())
