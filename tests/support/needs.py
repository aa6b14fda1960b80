"""Skip on a developer's machine, fail under CI, when a test's needs are absent."""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    """Whether the run is CI's, where `.ci/run` has installed everything."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (developer machine) or fail (CI) with reason when condition is false."""
    if condition:
        return
    if under_ci():
        pytest.fail(f"missing under CI: {reason}")
    pytest.skip(reason)


def require_binaries(*names: str) -> None:
    """Require each named program on PATH."""
    missing = [name for name in names if shutil.which(name) is None]
    require(not missing, "not installed: " + ", ".join(missing))
