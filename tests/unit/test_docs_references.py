"""The README and docs/ send a reader of a clone only to files the clone has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Markdown links [text](target), the target up to a space, ')' or '#'
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")
# Design notes kept outside the repository (the project's `shared/` folder)
OUTSIDE = re.compile(r"(?<![\w.-])(?:\.\./)?shared/[\w./-]+")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_no_file_outside_the_repository(doc):
    found = OUTSIDE.findall(doc.read_text())
    assert found == [], f"{doc.name} refers to files not in the repository: {found}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_relative_links_exist(doc):
    missing = [
        target
        for target in LINK.findall(doc.read_text())
        if "://" not in target
        and not target.startswith("mailto:")
        and not (doc.parent / target).exists()
    ]
    assert missing == [], f"{doc.name} links to missing files: {missing}"
