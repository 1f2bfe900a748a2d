"""The documentation stays true to itself: the README's contents list, and the tests the reliability catalogue names."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def headings(text: str) -> list[tuple[int, str]]:
    """The ``##`` and ``###`` headings outside code blocks, in order."""
    found, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^(##|###) (.+)$", line)
        if match and match.group(2) != "Contents":
            found.append((len(match.group(1)), match.group(2)))
    return found


def test_the_readme_contents_list_every_section_in_order() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    contents = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = [
        (2 + len(indent) // 2, title) for indent, title in re.findall(r"^( *)- \[(.+?)\]\(#[^)]*\)$", contents, re.M)
    ]
    assert listed == headings(text)


def test_every_test_the_reliability_catalogue_names_exists() -> None:
    catalogue = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    sources = {path.name: path.read_text(encoding="utf-8") for path in (REPO / "test").glob("test_*.py")}
    missing = []
    # ``…`` ends a name given by its start (``test_output_without_a_newline_…``).
    for module, name, cut in re.findall(r"`(test_[a-z_]+\.py)::(test_[A-Za-z0-9_]+)(…?)", catalogue):
        if f"def {name}{'' if cut else '('}" not in sources.get(module, ""):
            missing.append(f"{module}::{name}")
    assert not missing
