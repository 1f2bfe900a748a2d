"""``lynx status [NAME] [--json]``: the background schedulers of this directory, read without locking."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from lynx import daemon
from lynx.daemon import Liveness
from lynx.errors import EXIT_FAILED, EXIT_OK
from lynx.state import ENDINGS, SchedulerEntry, restorable
from lynx.summary import format_duration

HINT = "No background Lynx is recorded here; start one with 'lynx start --background'."
COLUMNS = ("NAME", "PID", "STATE", "UPTIME", "SCHEDULE", "NEXT RUN", "LAST RUN", "CONFIG", "LOG")
# A waiting scheduler whose next run is this much overdue has not been able to update its entry
# (a full disk): what it shows is older than it looks.
STALE_AFTER = 60.0


def status(
    name: str | None = None,
    *,
    as_json: bool = False,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
    directory: Path | None = None,
    now: datetime | None = None,
) -> int:
    """Run ``lynx status`` and return its exit code: 0 when at least one scheduler is alive."""
    directory = directory or Path.cwd()
    from lynx.recovery import recover_lost_runs

    recover_lost_runs(str(directory))  # a run whose Lynx was killed goes into the history as lost
    now = now or datetime.now().astimezone()
    _cancel_left_jobs(directory, stderr)
    # A broken record must not hide the others: it is named on stderr and left out.
    entries = daemon.registered(directory, on_error=lambda message: _warn(stderr, message))
    entries = daemon.select(entries, name)
    shown, rows = [], []
    for entry in entries:
        living = daemon.liveness(entry, directory)[0]
        if living is Liveness.ELSEWHERE:
            _warn(stderr, _elsewhere(entry))
            continue
        shown.append(entry)
        rows.append(describe(entry, now, living))
    if as_json:
        stdout.write(json.dumps(rows, indent=2) + "\n")
        if not rows:
            stderr.write(HINT + "\n")
    elif rows:
        _print_table([_cells(row, directory, daemon.is_legacy(entry), now) for row, entry in zip(rows, shown)], stdout)
        for row in rows:
            ended = row["ended"] or {}
            if ended.get("error"):
                stdout.write(f"{row['name']} ended with: {ended['error']}\n")
        for row in rows:
            asked = row["overrides"]
            if row["selection"]:
                from lynx.selection import record_said

                asked = record_said(row["selection"]) + asked
            if asked:
                stdout.write(f"{row['name']} runs with: {' '.join(asked)}\n")
        comeback = [row["name"] for row in rows if row["restorable"]]
        if comeback:
            stdout.write(f"Died (not stopped, not ended): 'lynx restore' starts again {', '.join(comeback)}.\n")
    else:
        stdout.write(HINT + "\n")
    return EXIT_OK if any(row["state"] in ("running", "waiting") for row in rows) else EXIT_FAILED


def _cancel_left_jobs(directory: Path, stderr: TextIO) -> None:
    """SLURM jobs a Lynx here could not end are cancelled now, if SLURM answers; said on stderr."""
    from lynx.history import JOBS_DIR

    if not os.path.isdir(directory / JOBS_DIR):
        return  # no SLURM job was ever recorded here (and lynx.jobs need not be imported)
    from lynx.jobs import cancel_left_jobs

    for left in cancel_left_jobs(str(directory), on_error=lambda message: _warn(stderr, message)):
        if left.outcome == "unanswered":
            _warn(stderr, left.message)
        else:
            stderr.write(left.message + "\n")


def describe(entry: SchedulerEntry, now: datetime, living: Liveness) -> dict[str, Any]:
    """One scheduler as ``status --json`` shows it, ``living`` as :func:`lynx.daemon.liveness` found it."""
    # A process that cannot be looked at (another user's) may well be alive.
    alive = living in (Liveness.ALIVE, Liveness.UNKNOWN)
    if entry.ended is not None:
        state = "ended"  # by itself, and said why (it may still be exiting)
    elif not alive:
        state = "dead"
    elif entry.run_started_at is not None:
        state = "running"
    else:
        state = "waiting"
    uptime = _seconds_since(entry.started_at, now) if state in ("running", "waiting") else None
    current_run = None
    if entry.run_started_at is not None and state in ("running", "dead"):
        current_run = {
            "run_id": entry.run_id,
            "started_at": entry.run_started_at,
            "step": entry.current_step,
            "step_started_at": entry.step_started_at,
            # A dead scheduler's run in progress will never end: it is lost.
            "state": "running" if state == "running" else "lost",
            "elapsed_s": _seconds_since(entry.run_started_at, now) if state == "running" else None,
        }
    next_run = entry.next_run if state in ("running", "waiting") else None
    overdue = _seconds_since(next_run, now)
    return {
        "name": entry.name,
        "pid": entry.pid,
        "state": state,
        "uptime_s": uptime,
        "config_file": entry.config_file,
        "log_file": entry.log_file,
        "started_at": entry.started_at,
        "schedule": entry.schedule,
        "next_run": next_run,
        "current_step": entry.current_step if state == "running" else None,
        "last_run": entry.last_run,
        "current_run": current_run,
        "ended": entry.ended,
        "stale": state == "waiting" and overdue is not None and overdue > STALE_AFTER,
        "updated_at": entry.updated_at,
        "command_line": list(entry.command_line) if entry.command_line is not None else None,
        "restorable": state == "dead" and restorable(entry),
        # The steps it runs (--from, --until, --only) and its KEY=VALUE overrides, as started.
        "selection": _selection(entry.options or {}),
        "overrides": [str(each) for each in (entry.options or {}).get("overrides") or []],
    }


def _selection(options: dict[str, Any]) -> dict[str, Any]:
    selection: dict[str, Any] = {key: str(options[key]) for key in ("from", "until") if options.get(key) is not None}
    if options.get("only"):
        selection["only"] = [str(each) for each in options["only"]]
    return selection


def _seconds_since(stamp: str | None, now: datetime) -> int | None:
    if not stamp:
        return None
    try:
        return max(0, round((now - datetime.fromisoformat(stamp)).total_seconds()))
    except (ValueError, TypeError, OverflowError):
        return None


def _cells(row: dict[str, Any], directory: Path, legacy: bool, now: datetime) -> tuple[str, ...]:
    """A row of the table; ``legacy``: from a pid file of an earlier Lynx, which records less (shown as '?')."""
    state = row["state"]
    run = row["current_run"]
    next_run = _when(row["next_run"])
    if state == "running":
        details = [f"step {row['current_step']}"] if row["current_step"] is not None else []
        if run and run["elapsed_s"] is not None:
            details.append(_duration(run["elapsed_s"]))
        state += f" ({', '.join(details)})" if details else ""
        if row["next_run"] and _seconds_since(row["next_run"], now):
            next_run = "after this run"  # its fire time passed during this run: the next one after it
    elif state == "ended" and row["ended"]:
        reason = str(row["ended"].get("reason"))
        state += f" ({ENDINGS.get(reason, reason)})"
    elif row["stale"]:
        state += f" (entry not updated since {_when(row['updated_at'])})" if row["updated_at"] else " (entry stale)"
    unknown = "?" if legacy else None
    last_run = _last_run(row["last_run"])
    if run is not None and run["state"] == "lost":
        at = f" at step {run['step']}" if run["step"] is not None else ""
        last_run = f"{_when(run['started_at'])} lost{at}"
    return (
        row["name"],
        str(row["pid"]),
        state,
        _duration(row["uptime_s"]) if row["uptime_s"] is not None else "-",
        row["schedule"] or unknown or "once",
        next_run,
        last_run,
        _short(row["config_file"], directory),
        _short(row["log_file"], directory) if row["log_file"] else unknown or "discarded",
    )


def _print_table(rows: list[tuple[str, ...]], stdout: TextIO) -> None:
    widths = [max(len(cells[index]) for cells in [COLUMNS, *rows]) for index in range(len(COLUMNS))]
    for cells in [COLUMNS, *rows]:
        stdout.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() + "\n")


def _last_run(last: dict[str, Any] | None) -> str:
    if not last:
        return "-"
    outcome = str(last.get("result"))
    if last.get("failed_step") is not None:
        outcome += f" at step {last['failed_step']}"
    duration = last.get("duration_s")
    took = f" in {format_duration(duration)}" if isinstance(duration, (int, float)) else ""
    return f"{_when(last.get('started_at'))} {outcome}{took}"


def _when(stamp: str | None) -> str:
    """An ISO time as local 'YYYY-MM-DD HH:MM:SS'."""
    if not stamp:
        return "-"
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError):
        return stamp


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 and seconds != int(seconds) else f"{int(seconds)}s"
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    if days:
        return f"{days}d {hour}h"
    return f"{hours}h {minute:02d}m" if hours else f"{minute}m {second:02d}s"


def _short(path: str | None, directory: Path) -> str:
    """A path relative to this directory when it is inside it."""
    if not path:
        return "-"
    relative = os.path.relpath(path, directory)
    return path if relative.startswith("..") else relative


def _elsewhere(entry: SchedulerEntry) -> str:
    record = daemon.PID_FILE if daemon.is_legacy(entry) else f".lynx/schedulers/{entry.name}.json"
    where = entry.elsewhere or "another directory"
    return (
        f"{record} describes a background Lynx of {where}, not of this directory (a copy of it?); "
        f"it is left out ('lynx stop {entry.name}' here removes the record)"
    )


def _warn(stderr: TextIO, message: str) -> None:
    """A record that cannot be read is named and left out; it must not hide the others."""
    stderr.write(f"Warning: {message}\n")
