"""The lines that end every run, pre-commit style: one per step that ran, then the total.

``lynx history`` shows past runs with the same lines.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Tuple

# (label, result, duration in seconds, exit code or None, attempts, timed out, why it was skipped or None)
SummaryRow = Tuple[str, str, float, "int | None", int, bool, "str | None"]
MIN_WIDTH = 40
HEADER = "Run summary:"
# The characters of a step's bar on the run's time axis.
BAR_WIDTH = 30


def summary_lines(
    rows: Iterable[SummaryRow],
    result: str,
    duration_s: float,
    timeline: Sequence[tuple[float, float] | None] | None = None,
) -> list[tuple[str, str | None]]:
    """The summary as (text, result) pairs, the result deciding each line's color (None: none).

    Args:
        rows: the steps that ran (or were skipped), in order.
        result: the run's result ('ok', 'failed' or 'interrupted').
        duration_s: the whole run's duration.
        timeline: for runs whose steps may run side by side, each row's (start offset, time from its
            first start to its last end) in seconds, or None for a step that never started: each
            line then says when the step started and draws a bar on the run's time axis.
    """
    rows = list(rows)
    width = label_width(rows)
    lines = step_lines(rows, width)
    if timeline is not None:
        lines = [(_with_bar(text, span, duration_s), outcome) for (text, outcome), span in zip(lines, timeline)]
    total = (_line("Total", result, duration_s, [], width), result)
    return [(HEADER, None), *lines, total]


def _with_bar(text: str, span: tuple[float, float] | None, total: float) -> str:
    """``text`` with the step's start offset and its bar: ``  +1.20 s  |   #####      |``."""
    if span is None:
        return text
    start, length = span
    scale = BAR_WIDTH / total if total > 0 else 0.0
    first = min(int(start * scale), BAR_WIDTH - 1)
    last = max(first + 1, min(round((start + length) * scale), BAR_WIDTH))
    bar = " " * first + "#" * (last - first) + " " * (BAR_WIDTH - last)
    head, _, details = text.partition("  (")
    tail = f"  ({details}" if details else ""
    return f"{head}  +{format_duration(start)}  |{bar}|{tail}"


def label_width(rows: list[SummaryRow]) -> int:
    """Where the dots end: the results line up."""
    return max([MIN_WIDTH] + [len(row[0]) + 4 for row in rows])


def step_lines(rows: Iterable[SummaryRow], width: int) -> list[tuple[str, str]]:
    """One (text, result) line per step."""
    lines = []
    for label, outcome, duration, returncode, attempts, timed_out, reason in rows:
        details = []
        if outcome == "failed" and timed_out:
            details.append("timed out")
        elif outcome == "skipped" and reason:
            details.append(reason)
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
