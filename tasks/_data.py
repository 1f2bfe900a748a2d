"""Shared by the example tasks: read the small CSV-like data file."""

from __future__ import annotations


def read_records(path: str) -> list[dict[str, str]]:
    """Rows of ``path`` as dicts; lines starting with '#' hold the header."""
    header: list[str] = []
    rows: list[dict[str, str]] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                header = [name.strip() for name in line.lstrip("# ").split(",")]
                continue
            rows.append(dict(zip(header, line.split(","))))
    return rows
