"""``lynx restore [NAME]... [--all]``: start again the background schedulers of this directory that died.

A scheduler died when its process is gone although it neither ended by itself (its schedule ran out,
a failed run ended it) nor was stopped with ``lynx stop`` (which leaves no record behind): after a
reboot, the OOM killer, a ``kill -9``. Each is started as ``lynx start -bg`` started it, with the
options its record keeps. Running ones are left alone; one whose config is gone or no longer loads is
reported and skipped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

from lynx import daemon
from lynx.daemon import Liveness
from lynx.errors import EXIT_FAILED, EXIT_OK, ConfigError, LynxError
from lynx.selection import step_ref
from lynx.state import SchedulerEntry


def restore(
    names: Sequence[str],
    *,
    all_: bool = False,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Run ``lynx restore`` and return its exit code: 1 if any scheduler asked for could not be restored."""
    from lynx.recovery import recover_lost_runs

    directory = Path.cwd()  # where 'lynx start' starts them
    recover_lost_runs(str(directory))  # the runs the dead schedulers left, before new ones start

    def warn(message: str) -> None:
        stderr.write(f"Warning: {message}\n")

    entries = daemon.registered(directory, on_error=warn)
    if names and all_:
        raise ConfigError("give NAMEs or --all, not both")
    # No NAME: all of them, as with --all.
    chosen = [entry for name in dict.fromkeys(names) for entry in daemon.select(entries, name)] if names else entries
    failed = False
    for entry in chosen:
        if daemon.is_legacy(entry):
            continue  # a pid file of an earlier Lynx does not say how it was started
        living = daemon.liveness(entry, directory)[0]
        if living is Liveness.ELSEWHERE:
            stderr.write(f"Warning: '{entry.name}' was recorded in another directory (a copy?); left alone.\n")
            continue
        if living in (Liveness.ALIVE, Liveness.UNKNOWN):
            stdout.write(f"'{entry.name}' is running (PID {entry.pid}): left alone.\n")
            continue
        if entry.ended is not None:
            why = entry.ended.get("reason", "?")
            stdout.write(f"'{entry.name}' ended by itself ({why}): not restored.\n")
            continue
        if not entry.options:
            stdout.write(f"'{entry.name}' was started by an earlier Lynx, whose record says not how: not restored.\n")
            continue
        try:
            pid = _start_again(entry, directory, environ)
        except LynxError as error:
            if "is already running here" in error.message:
                stdout.write(f"'{entry.name}' was restored meanwhile (another 'lynx restore'): left alone.\n")
                continue
            failed = True
            stderr.write(f"Error: cannot restore '{entry.name}': {error.format_message()}\n")
            continue
        stdout.write(f"Restored '{entry.name}' (PID {pid}): {' '.join(_command(entry))}\n")
    if not chosen:
        stdout.write("No background Lynx is recorded here: nothing to restore.\n")
    return EXIT_FAILED if failed else EXIT_OK


def _start_again(entry: SchedulerEntry, directory: Path, environ: Mapping[str, str]) -> int:
    """Start the scheduler ``entry`` describes, as it was started; its new PID."""
    import io

    from lynx.commands.start import start
    from lynx.commands.start_request import StartOptions
    from lynx.state import entry_path, read_entry

    options: dict[str, Any] = entry.options or {}
    config = _path(options.get("config_file"), directory)
    if config is None or not os.path.isfile(config):
        raise LynxError(f"its config file {options.get('config_file')} no longer exists")
    log_file = _path(options.get("log_file"), directory)
    start_options = StartOptions(
        config_file=config,
        log_file=log_file,
        log_level=str(options.get("log_level") or StartOptions.log_level),
        log_size=_whole(options.get("log_size"), StartOptions.log_size),
        log_backup_count=_whole(options.get("log_backup_count"), StartOptions.log_backup_count),
        non_interactive=True,
        keep_running=options.get("keep_running") is True,
        background=True,
        name=entry.name,
        from_=step_ref(options.get("from")),
        until=step_ref(options.get("until")),
        only=tuple(str(each) for each in options.get("only") or ()),
        overrides=tuple(str(each) for each in options.get("overrides") or ()),
        command_line=tuple(entry.command_line[1:]) if entry.command_line else (),
        ask_log_file=False,
    )
    quiet = io.StringIO()
    start(start_options, stdin=io.StringIO(), stdout=quiet, environ=environ)
    return read_entry(entry_path(directory, entry.name)).pid


def _command(entry: SchedulerEntry) -> list[str]:
    return list(entry.command_line) if entry.command_line else ["lynx", "start", "-bg", "--name", entry.name]


def _path(value: Any, directory: Path) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value if os.path.isabs(value) else str(directory / value)


def _whole(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
