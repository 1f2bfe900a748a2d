"""``lynx start --background``: the checks a person at the terminal must see, then a detached scheduler
started, recorded, and waited for until it says it is ready (or why it is not)."""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, TextIO

from lynx import dialog
from lynx.commands.start_request import StartOptions, cancel_left_jobs, check_pipeline_log_file
from lynx.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, LynxError
from lynx.records import Pipeline


def start_in_background(
    options: StartOptions, pipeline: Pipeline, *, stdin: TextIO, stdout: TextIO, environ: Mapping[str, str]
) -> int:
    """Start ``pipeline`` in a detached scheduler and return ``lynx start -bg``'s exit code (0: it is running)."""
    from pathlib import Path

    from lynx.boot import wait_until_ready
    from lynx.daemon import start_detached, unstarted
    from lynx.state import check_name

    if options.name is not None:
        name = check_name(options.name)
    else:
        name = check_name(pipeline.name, what="the config file's name", hint="; name the scheduler with --name NAME")
    if pipeline.schedule is not None:
        from lynx.cron import trigger_of

        trigger_of(pipeline.schedule)
    cancel_left_jobs(lambda line: stdout.write(line + "\n"), lambda line: stdout.write(f"Warning: {line}\n"), environ)
    log_file = options.log_file
    if log_file is None and options.ask_log_file:
        # Only a person at a terminal can answer; cron, CI and '< /dev/null' get Enter's answer.
        if stdin.isatty():
            log_file = dialog.ask(dialog.LOG_FILE, stdin=stdin, stdout=stdout) or None
        else:
            stdout.write("No --log-file and no terminal to ask for one: the output will be discarded.\n")
    if log_file is not None:
        check_pipeline_log_file(log_file, pipeline)
        log_file = os.path.abspath(os.path.expanduser(log_file))
        _check_writable(log_file)
    directory = Path.cwd()
    config_file = os.path.abspath(pipeline.source)
    # A log file inside the project folder is named relative to it: it moves with a renamed folder.
    log_argument = _within(log_file, directory) if log_file is not None else None
    arguments = [
        "start",
        "--config-file", config_file,
        "--non-interactive",
        "--log-level", options.log_level,
        "--log-size", str(options.log_size),
        "--log-backup-count", str(options.log_backup_count),
        "--name", name,
        "--detached",
    ]  # fmt: skip
    if options.keep_running:
        arguments.append("--keep-running")
    for option, value in (("--from", options.from_), ("--until", options.until)):
        if value is not None:
            arguments += [option, value]
    for value in options.only:
        arguments += ["--only", value]
    if log_argument is not None:
        arguments += ["--log-file", log_argument]
    if options.overrides:
        arguments += ["--", *options.overrides]
    # What 'lynx restore' needs to start it again exactly (paths relative to the folder when inside it).
    started_with = {
        "config_file": _within(config_file, directory),
        "name": name,
        "log_file": log_argument,
        "log_level": options.log_level,
        "log_size": options.log_size,
        "log_backup_count": options.log_backup_count,
        "keep_running": options.keep_running,
        "from": options.from_,
        "until": options.until,
        "only": list(options.only),
        "overrides": list(options.overrides),
    }
    schedule = pipeline.schedule
    entry, process = start_detached(
        arguments,
        directory=directory,
        name=name,
        config_file=config_file,
        log_file=log_file,
        schedule=_describe_schedule(schedule) if schedule else None,
        options=started_with,
        command_line=("lynx", *options.command_line),
    )
    ready, said = wait_until_ready(process)
    if ready is False:
        unstarted(directory, entry)
        raise _not_started(name, process.returncode, said)
    where = f"logging to {log_file}" if log_file else "its output is discarded"
    stdout.write(
        f"Lynx is running in the background as '{name}' (PID {entry.pid}); {where}. Stop it with 'lynx stop {name}'.\n"
    )
    if ready is None:
        stdout.write(f"It has not said it is ready yet: see 'lynx status {name}'.\n")
    stdout.flush()
    return EXIT_OK


def _within(path: str, directory: Any) -> str:
    """``path`` relative to ``directory`` when it is inside it, else as it is (absolute)."""
    relative = os.path.relpath(path, directory)
    return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


def _not_started(name: str, code: int, said: bytes) -> LynxError:
    """The error of a scheduler that ended before it was ready: its own ``Error:`` line and exit code."""
    lines = said.decode("utf-8", "replace").rstrip("\n").splitlines()
    if lines and lines[-1].startswith("Error: ") and code in (EXIT_FAILED, EXIT_USAGE):
        for line in lines[:-1]:
            sys.stderr.write(line + "\n")
        error = ConfigError(lines[-1][len("Error: ") :]) if code == EXIT_USAGE else LynxError(lines[-1][7:])
        return error
    for line in lines:  # a traceback: what the user needs to see why
        sys.stderr.write(line + "\n")
    return LynxError(
        f"the background Lynx '{name}' ended at once (exit code {code}) before it ran anything; nothing was started"
    )


def _check_writable(log_file: str) -> None:
    """Find out now, while the user is looking, that the log cannot be written, without creating it.

    An existing regular file is opened for appending; a new one is proven possible by a temporary
    file beside it (a start refused later must not leave an empty log behind). Anything else (a
    FIFO, a terminal) only has its permission checked: opening a FIFO waits for a reader, and
    closing it again would end that reader's input.
    """
    import stat
    import tempfile

    try:
        status: os.stat_result | None = os.stat(log_file)
    except FileNotFoundError:
        status = None
    except OSError as error:
        raise ConfigError(f"cannot open the log file {log_file}: {error.strerror or error}") from None
    try:
        if status is None:
            fd, temp = tempfile.mkstemp(prefix=".lynx-check.", dir=os.path.dirname(log_file))
            os.close(fd)
            os.unlink(temp)
        elif stat.S_ISREG(status.st_mode):
            with open(log_file, "a", encoding="utf-8"):
                pass
        elif not os.access(log_file, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        raise ConfigError(f"cannot open the log file {log_file}: {error.strerror or error}") from None


def _describe_schedule(schedule: Any) -> str:
    """The schedule as the config wrote it: the crontab line, or the cron fields."""
    return schedule.crontab or " ".join(f"{key}={value}" for key, value in schedule.fields)
