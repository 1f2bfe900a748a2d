"""The lines that end every run, pre-commit style: one per step that ran, then the total.

``lynx history`` shows past runs with the same lines.
"""

from __future__ import annotations

from typing import Iterable, Tuple

# (label, result, duration in seconds, exit code or None, attempts, timed out)
SummaryRow = Tuple[str, str, float, "int | None", int, bool]
MIN_WIDTH = 40
HEADER = "Run summary:"


def summary_lines(rows: Iterable[SummaryRow], result: str, duration_s: float) -> list[tuple[str, str | None]]:
    """The summary as (text, result) pairs, the result deciding each line's color (None: none).

    Args:
        rows: the steps that ran, in order.
        result: the run's result ('ok', 'failed' or 'interrupted').
        duration_s: the whole run's duration.
    """
    rows = list(rows)
    width = label_width(rows)
    total = (_line("Total", result, duration_s, [], width), result)
    return [(HEADER, None), *step_lines(rows, width), total]


def label_width(rows: list[SummaryRow]) -> int:
    """Where the dots end: the results line up."""
    return max([MIN_WIDTH] + [len(row[0]) + 4 for row in rows])


def step_lines(rows: Iterable[SummaryRow], width: int) -> list[tuple[str, str]]:
    """One (text, result) line per step."""
    lines = []
    for label, outcome, duration, returncode, attempts, timed_out in rows:
        details = []
        if outcome == "failed" and timed_out:
            details.append("timed out")
        elif outcome == "failed" and returncode is not None:
            details.append(f"exit code {returncode}")
        if attempts > 1:
            details.append(f"{attempts} attempts")
        lines.append((_line(label, outcome, duration, details, width), outcome))
    return lines


def _line(label: str, outcome: str, duration: float, details: list[str], width: int) -> str:
    dots = "." * (width - len(label) - 2)
    text = f"  {label} {dots} {outcome:<12}{format_duration(duration)}"
    return f"{text}  ({', '.join(details)})" if details else text


def format_duration(seconds: float) -> str:
    """``0.42 s``, ``12.30 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
