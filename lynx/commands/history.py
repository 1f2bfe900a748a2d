"""``lynx history``: the recent runs in this directory, newest first, with their steps."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from lynx.errors import EXIT_OK, LynxError
from lynx.history import history_path, read_runs, run_name
from lynx.summary import format_duration, label_width, step_lines


def history(
    *,
    limit: int,
    as_json: bool,
    name: str | None,
    directory: str | None = None,
    stdout: TextIO = sys.stdout,
) -> int:
    """Print the last ``limit`` runs (0: all), as text or as a JSON array; return the exit code."""
    directory = directory or os.getcwd()
    from lynx.recovery import recover_lost_runs

    recover_lost_runs(directory)  # a run whose Lynx was killed shows as lost
    try:
        runs = read_runs(directory, limit=limit or None, name=name)
    except OSError as error:
        where = os.path.relpath(history_path(directory))
        raise LynxError(f"cannot read the run history {where}: {error.strerror or error}") from None
    if as_json:
        import json

        stdout.write(json.dumps(runs, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    if not runs:
        which = f"of '{name}' " if name is not None else ""
        where = os.path.relpath(history_path(directory))
        stdout.write(f"No runs {which}recorded in {where} yet; 'lynx start' records each run there.\n")
        return EXIT_OK
    stdout.write("\n".join(_describe(run) for run in runs) + "\n")
    return EXIT_OK


def _describe(run: dict[str, Any]) -> str:
    """A run's heading line, then one line per step."""
    who = run_name(run) if run.get("name") else f"{run_name(run)} (foreground)"
    result = str(run.get("result"))
    if result in ("failed", "lost") and run.get("failed_step") is not None:
        result = f"{result} at step {run['failed_step']}"
    if result.startswith("lost") and isinstance(run.get("last_alive_at"), str):
        result += f" (Lynx last known alive {_when(run['last_alive_at'])[11:]})"
    lines = [
        f"{_when(run.get('started_at'))}  {who}  {result}  {format_duration(_number(run.get('duration_s')))}"
        + _asked(run)
    ]
    steps = run.get("steps")
    rows = [_row(step) for step in steps if isinstance(step, dict)] if isinstance(steps, list) else []
    lines += [text for text, _ in step_lines(rows, label_width(rows))]
    return "\n".join(lines)


def _asked(run: dict[str, Any]) -> str:
    """How the run was asked for, when not plainly: ``  (retry of 2026…, --from 3, vars.lr=0.5)``."""
    said = []
    if isinstance(run.get("retry_of"), str):
        said.append(f"retry of {run['retry_of']}")
    if run.get("selection"):
        from lynx.selection import record_said  # a dataclass to build: only for runs that had a selection

        said += record_said(run["selection"])
    overrides = run.get("overrides")
    if isinstance(overrides, list):
        said += [each for each in overrides if isinstance(each, str)]
    return f"  ({', '.join(said)})" if said else ""


def _row(step: dict[str, Any]) -> tuple[str, str, float, int | None, int, bool, str | None]:
    title = step.get("name") or step.get("script")
    attempts = step.get("attempts")
    return (
        f"Step {step.get('number')} ({title})",
        str(step.get("result")),
        _number(step.get("duration_s")),
        step.get("returncode"),
        attempts if isinstance(attempts, int) else 1,
        step.get("timed_out") is True,
        step.get("reason") if isinstance(step.get("reason"), str) else None,
    )


def _when(stamp: object) -> str:
    """``2026-11-22T23:48:26.829+01:00`` as ``2026-11-22 23:48:26`` (the time where it ran)."""
    return f"{stamp[:10]} {stamp[11:19]}" if isinstance(stamp, str) and len(stamp) >= 19 else "????-??-?? ??:??:??"


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
