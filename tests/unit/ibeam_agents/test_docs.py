"""docs/settings.md is the one table of every setting: complete and true."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

from ibeam_agents.settings import Settings

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "settings.md"
# Names built at run time (f"IBEAM_{name}_EL_ID") rather than spelled out.
BUILT_NAMES = {
    "IBEAM_USER_NAME_EL_ID",
    "IBEAM_PASSWORD_EL_ID",
    "IBEAM_SUBMIT_EL_ID",
}
# Read by the image's entrypoint and supervisord.conf, not by Python.
SHELL_NAMES = {"IBEAM_RUN_DIR"}


def _rows() -> list[list[str]]:
    rows = []
    for line in DOC.read_text().splitlines():
        if line.startswith("| `IBEAM_"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def documented_variables() -> set[str]:
    names = set()
    for row in _rows():
        names.update(re.findall(r"IBEAM_[A-Z0-9_]+", row[0]))
    return names


def _read_in_code() -> set[str]:
    names = set()
    for path in (REPO / "ibeam_agents").glob("*.py"):
        names.update(re.findall(r"IBEAM_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    names.discard("IBEAM_ROUTE")
    return {n for n in names if not n.endswith("_FILE")}


def test_docs_every_variable_the_code_reads_is_documented():
    missing = _read_in_code() - documented_variables()
    assert not missing, f"add to docs/settings.md: {sorted(missing)}"


def test_docs_every_documented_variable_is_read():
    unknown = documented_variables() - _read_in_code() - BUILT_NAMES - SHELL_NAMES
    assert not unknown, f"documented but never read: {sorted(unknown)}"


def test_docs_defaults_match_the_settings_object():
    defaults = {f.name: f.default for f in fields(Settings)}
    checked = 0
    for row in _rows():
        names = re.findall(r"IBEAM_[A-Z0-9_]+", row[0])
        values = re.findall(r"`([^`]*)`", row[1])
        if len(names) != len(values):
            continue
        for name, value in zip(names, values, strict=True):
            field = name.removeprefix("IBEAM_").lower()
            if field not in defaults or defaults[field] is MISSING:
                continue
            default = defaults[field]
            if isinstance(default, bool):
                assert value == str(default).lower(), name
            elif isinstance(default, int | float):
                assert float(value) == float(default), name
            elif isinstance(default, str | Path):
                assert value == str(default), name
            else:
                continue
            checked += 1
    assert checked >= 25
