"""``lynx start``: check the config, then run the pipeline once, on a schedule, or in the background."""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Mapping, TextIO

from lynx import dialog
from lynx.config import Pipeline, load_pipeline
from lynx.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError, Terminated
from lynx.logs import OutputRelay, color_wanted, get_logger, setup_logging
from lynx.process import StepGuard
from lynx.runner import RunResult, run_pipeline, stop_on_failure


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


def start(
    options: StartOptions,
    *,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Run ``lynx start`` and return its exit code."""
    config_file = _existing_config(options.config_file, stdin=stdin, stdout=stdout)
    pipeline = load_pipeline(config_file)
    if options.background:
        return _start_in_background(options, pipeline, stdin=stdin, stdout=stdout)

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
    relay = OutputRelay(
        None if screen is None or options.log_level not in ("DEBUG", "INFO") else _binary(screen),
        log_file=log_file,
    )
    _raise_on_termination_signals()
    log = get_logger()
    guard = StepGuard()
    interactive = not options.non_interactive
    scheduled = pipeline.schedule is not None and not interactive
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
        )

    try:
        if scheduled:
            from lynx.schedule import run_on_schedule

            assert pipeline.schedule is not None
            watch = stdin.fileno() if not options.detached and stdin.isatty() else None
            result = run_on_schedule(
                pipeline.schedule, run_once, keep_running=options.keep_running, guard=guard, stdin_fd=watch
            )
        else:
            result = run_once()
    except KeyboardInterrupt:
        log.warning("Lynx was interrupted (Ctrl+C) and has stopped.")
        return EXIT_INTERRUPTED
    except Terminated as terminated:
        log.warning(f"Lynx received {signal.Signals(terminated.signum).name} and has stopped.")
        return terminated.exit_code
    if scheduled:
        log.info("The schedule has ended.")
    return EXIT_OK if result.ok else EXIT_FAILED


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


def _start_in_background(options: StartOptions, pipeline: Pipeline, *, stdin: TextIO, stdout: TextIO) -> int:
    from pathlib import Path

    from lynx.daemon import start_detached

    log_file = options.log_file
    if log_file is None:
        log_file = dialog.ask(dialog.LOG_FILE, stdin=stdin, stdout=stdout) or None
    if log_file is not None:
        log_file = os.path.abspath(os.path.expanduser(log_file))
        # Find out now, while the user is looking, that the log cannot be written.
        try:
            with open(log_file, "a", encoding="utf-8"):
                pass
        except OSError as error:
            raise ConfigError(f"cannot open the log file {log_file}: {error.strerror or error}") from None
    config_file = os.path.abspath(pipeline.source)
    arguments = [
        "start",
        "--config-file", config_file,
        "--non-interactive",
        "--log-level", options.log_level,
        "--log-size", str(options.log_size),
        "--log-backup-count", str(options.log_backup_count),
        "--detached",
    ]  # fmt: skip
    if options.keep_running:
        arguments.append("--keep-running")
    if log_file is not None:
        arguments += ["--log-file", log_file]
    record = start_detached(arguments, directory=Path.cwd(), config_file=config_file, log_file=log_file)
    where = f"logging to {log_file}" if log_file else "its output is discarded"
    stdout.write(f"Lynx is running in the background (PID {record.pid}); {where}. Stop it with 'lynx stop'.\n")
    stdout.flush()
    return EXIT_OK


def _raise_on_termination_signals() -> None:
    """SIGTERM and SIGHUP (the terminal closed) end Lynx like Ctrl+C does: steps first."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def _binary(stream: TextIO) -> object:
    stream.flush()
    return getattr(stream, "buffer", stream)
