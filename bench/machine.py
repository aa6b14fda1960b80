"""A description of the machine the benchmark ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import psutil

from bench import REPO

GIB = 1024**3


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc.__class__.__name__})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def git_revision() -> str:
    """HEAD, and whether the code under test differs from it."""
    head = _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    try:
        done = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--",
                "ibeam_agents",
                "gateway_sim",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return head
    changed = sorted({line[3:].split("/")[0] for line in done.stdout.splitlines()})
    if changed:
        return f"{head} + uncommitted changes in {', '.join(changed)}"
    return head


def describe(ibeam_python: Path | None) -> dict[str, str]:
    """Name, value pairs for the report."""
    facts = {
        "CPU": cpu_model(),
        "cores": str(psutil.cpu_count(logical=True)),
        "memory": f"{psutil.virtual_memory().total / GIB:.1f} GiB",
        "OS": f"{os_name()}, Linux {platform.release()}",
        "Python (agent)": platform.python_version(),
        "Chromium": _first_line(["/usr/bin/chromium", "--version"]),
        "chromedriver": _first_line(["/usr/bin/chromedriver", "--version"]),
        "agent revision": git_revision(),
    }
    if ibeam_python is not None:
        facts["Python (IBeam venv)"] = _first_line(
            [str(ibeam_python), "--version"]
        ).replace("Python ", "")
    return facts
