"""``lynx start``: check the config, then run the pipeline once, on a schedule, or in the background."""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Mapping, TextIO

from lynx import __version__, dialog
from lynx.config import load_pipeline
from lynx.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError, LynxError, Terminated
from lynx.history import recorder_for
from lynx.launch import check_launchers
from lynx.logs import OutputRelay, check_log_file, color_wanted, get_logger, setup_logging
from lynx.process import TERMINATE_GRACE, StepGuard, supervise_steps
from lynx.records import Pipeline
from lynx.runner import RunResult, combine_reporters, run_pipeline, stop_on_failure


@dataclass(frozen=True)
class StartOptions:
    config_file: str
    log_file: str | None
    log_level: str
    log_size: int
    log_backup_count: int
    non_interactive: bool
    keep_running: bool
    background: bool
    detached: bool = False
    # The background scheduler's name (default: the config file's name without extension).
    name: str | None = None


def start(
    options: StartOptions,
    *,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Run ``lynx start`` and return its exit code."""
    if options.name is not None and not (options.background or options.detached):
        raise ConfigError("--name names a background scheduler: use it with --background")
    config_file = _existing_config(options.config_file, stdin=stdin, stdout=stdout)
    pipeline = load_pipeline(config_file)
    check_launchers(pipeline, environ=environ)
    if options.background:
        return _start_in_background(options, pipeline, stdin=stdin, stdout=stdout, environ=environ)
    if options.log_file:
        _check_log_file(options.log_file, pipeline)
    from lynx.watchdog import start_watchdog

    # First, while Lynx has no thread: it ends the running step should Lynx be killed (lynx.watchdog).
    watchdog = start_watchdog(grace=TERMINATE_GRACE, log_file=options.log_file)

    screen = None if options.detached else stdout
    color = screen is not None and color_wanted(screen, dict(environ))
    log_file = setup_logging(
        level=getattr(logging, options.log_level),
        color=color,
        screen=screen,
        log_file=options.log_file,
        log_size=options.log_size,
        backup_count=options.log_backup_count,
    )
    output_screen = None if screen is None or options.log_level not in ("DEBUG", "INFO") else _binary(screen)
    relay = OutputRelay(output_screen, log_file=log_file)
    _raise_on_termination_signals()
    log = get_logger()
    name = (options.name or pipeline.name) if options.detached else None
    _cancel_left_jobs(log.info, log.warning, environ)
    if watchdog is not None:
        watchdog.adopted()  # before Lynx becomes a subreaper: init, not Lynx, must adopt it
    # What a finished step left running has a relay of its own: its lines never split the next step's.
    guard = StepGuard(
        leftover_output=OutputRelay(output_screen, log_file=log_file).write, watchdog=watchdog, scheduler=name
    )
    supervise_steps(guard)
    history = recorder_for(os.getcwd(), pipeline.source, name, environ)
    interactive = not options.non_interactive
    scheduled = pipeline.schedule is not None and not interactive
    mode = "background" if options.detached else "schedule" if scheduled else "once"
    log.info(
        f"Lynx {__version__} started: PID {os.getpid()}, config {os.path.abspath(pipeline.source)}, mode {mode}.",
        extra={"file_only": True},
    )
    # Only a detached scheduler keeps an entry for 'lynx status'; a foreground run does not pay for it.
    entry = _entry_reporter(options.name, pipeline) if options.detached and options.name else None
    if pipeline.schedule is not None and interactive:
        log.info("The config has a cron section; interactive mode runs the pipeline once (use -ni to schedule it).")

    def run_once() -> RunResult:
        on_failure = dialog.RerunDialog(stdin=stdin, stdout=stdout, color=color) if interactive else stop_on_failure
        return run_pipeline(
            pipeline,
            on_failure=on_failure,
            relay=relay,
            guard=guard,
            environ=environ,
            inherit_stdin=interactive,
            reporter=combine_reporters(history, entry),
        )

    try:
        if scheduled:
            from lynx.schedule import run_on_schedule

            assert pipeline.schedule is not None
            watch = stdin.fileno() if not options.detached and stdin.isatty() else None
            result = run_on_schedule(
                pipeline.schedule,
                run_once,
                keep_running=options.keep_running,
                guard=guard,
                stdin_fd=watch,
                stop_hint=f"Stop it with 'lynx stop {name}'." if options.detached else "Press Ctrl+C to stop.",
                on_next_run=entry.next_run if entry is not None else None,
            )
        else:
            result = run_once()
    except KeyboardInterrupt:
        log.warning("Lynx was interrupted (Ctrl+C) and has stopped.")
        return EXIT_INTERRUPTED
    except Terminated as terminated:
        log.warning(f"Lynx received {signal.Signals(terminated.signum).name} and has stopped.")
        return terminated.exit_code
    finally:
        if watchdog is not None:
            watchdog.close()
    if scheduled:
        log.info("The schedule has ended.")
    return EXIT_OK if result.ok else EXIT_FAILED


def _cancel_left_jobs(
    info: Callable[[str], object], warning: Callable[[str], object], environ: Mapping[str, str]
) -> None:
    """SLURM jobs an earlier Lynx here could not end (it was killed, or the controller did not
    answer) are cancelled now, if SLURM answers; those that may still run are named."""
    from lynx.history import JOBS_DIR

    if not os.path.isdir(JOBS_DIR):
        return  # no SLURM job was ever recorded here (and lynx.jobs need not be imported)
    from lynx.jobs import cancel_left_jobs

    for left in cancel_left_jobs(environ=environ, on_error=warning):
        (warning if left.outcome == "unanswered" else info)(left.message)


def _entry_reporter(name: str, pipeline: Pipeline) -> Any:
    """The reporter that keeps this detached scheduler's ``.lynx/`` entry current, if it has one."""
    from pathlib import Path

    from lynx.state import EntryReporter, entry_path, read_entry

    directory = Path.cwd()
    try:
        entry = read_entry(entry_path(directory, name))
    except (OSError, LynxError):
        return None
    if entry.pid != os.getpid():
        return None
    next_fire = None
    if pipeline.schedule is not None:
        try:
            trigger = pipeline.schedule.trigger()
        except Exception:  # the schedule itself reports what is wrong with it
            trigger = None
        if trigger is not None:
            next_fire = lambda now: trigger.get_next_fire_time(None, now.astimezone(trigger.timezone))  # noqa: E731
    return EntryReporter(entry, directory, warn=get_logger().warning, next_fire=next_fire)


def _existing_config(config_file: str, *, stdin: TextIO, stdout: TextIO) -> str:
    """The config path; on a terminal, ask for another while the given one does not exist."""
    path = config_file
    while not os.path.isfile(path):
        if not stdin.isatty():
            raise ConfigError(f"the configuration file {path} does not exist")
        answer = dialog.ask(dialog.CONFIG_PATH, stdin=stdin, stdout=stdout)
        if not answer:
            raise ConfigError(f"the configuration file {path} does not exist")
        path = os.path.expanduser(answer)
    return path


def _check_log_file(log_file: str, pipeline: Pipeline) -> None:
    """A log file that is the config or a step's script (a slip of -lf for -cf) is refused."""
    protected = {step.path: f"the script of {step.label}" for step in reversed(pipeline.steps)}
    protected[pipeline.source] = "the config file (did you mean -cf?)"
    check_log_file(os.path.expanduser(log_file), protected)


def _start_in_background(
    options: StartOptions, pipeline: Pipeline, *, stdin: TextIO, stdout: TextIO, environ: Mapping[str, str]
) -> int:
    from pathlib import Path

    from lynx.daemon import start_detached
    from lynx.state import check_name

    if options.name is not None:
        name = check_name(options.name)
    else:
        name = check_name(pipeline.name, what="the config file's name")
    _cancel_left_jobs(lambda line: stdout.write(line + "\n"), lambda line: stdout.write(f"Warning: {line}\n"), environ)
    log_file = options.log_file
    if log_file is None:
        # Only a person at a terminal can answer; cron, CI and '< /dev/null' get Enter's answer.
        if stdin.isatty():
            log_file = dialog.ask(dialog.LOG_FILE, stdin=stdin, stdout=stdout) or None
        else:
            stdout.write("No --log-file and no terminal to ask for one: the output will be discarded.\n")
    if log_file is not None:
        _check_log_file(log_file, pipeline)
        log_file = os.path.abspath(os.path.expanduser(log_file))
        _check_writable(log_file)
    config_file = os.path.abspath(pipeline.source)
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
    if log_file is not None:
        arguments += ["--log-file", log_file]
    schedule = pipeline.schedule
    entry = start_detached(
        arguments,
        directory=Path.cwd(),
        name=name,
        config_file=config_file,
        log_file=log_file,
        schedule=_describe_schedule(schedule) if schedule else None,
    )
    where = f"logging to {log_file}" if log_file else "its output is discarded"
    stdout.write(
        f"Lynx is running in the background as '{name}' (PID {entry.pid}); {where}. Stop it with 'lynx stop {name}'.\n"
    )
    stdout.flush()
    return EXIT_OK


def _check_writable(log_file: str) -> None:
    """Find out now, while the user is looking, that the log cannot be written.

    A regular file (or a new one) is opened for appending; anything else (a FIFO, a terminal) only
    has its permission checked: opening a FIFO waits for a reader, and closing it again would end
    that reader's input.
    """
    import stat

    try:
        regular = stat.S_ISREG(os.stat(log_file).st_mode)
    except FileNotFoundError:
        regular = True
    except OSError as error:
        raise ConfigError(f"cannot open the log file {log_file}: {error.strerror or error}") from None
    try:
        if regular:
            with open(log_file, "a", encoding="utf-8"):
                pass
        elif not os.access(log_file, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        raise ConfigError(f"cannot open the log file {log_file}: {error.strerror or error}") from None


def _describe_schedule(schedule: Any) -> str:
    """The schedule as the config wrote it: the crontab line, or the cron fields."""
    return schedule.crontab or " ".join(f"{key}={value}" for key, value in schedule.fields)


def _raise_on_termination_signals() -> None:
    """SIGTERM and SIGHUP (the terminal closed) end Lynx like Ctrl+C does: steps first."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def _binary(stream: TextIO) -> BinaryIO:
    stream.flush()
    return getattr(stream, "buffer", stream)  # type: ignore[arg-type, no-any-return]  # a binary one, or as it is
