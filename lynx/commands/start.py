"""``lynx start``: check the config, then run the pipeline once or on its schedule, here or as the detached
scheduler (starting one, for ``-bg``, is :mod:`lynx.commands.background`)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, BinaryIO, Mapping, TextIO

from lynx import __version__, dialog
from lynx.commands.start_request import StartOptions, cancel_left_jobs, check_pipeline_log_file
from lynx.config import load_pipeline
from lynx.ending import TERMINATE_GRACE
from lynx.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, ConfigError, LynxError, Terminated
from lynx.history import recorder_for
from lynx.launch import check_launchers
from lynx.logs import color_wanted, get_logger, setup_logging
from lynx.outcome import RunResult, combine_reporters
from lynx.process import StepGuard, supervise_steps
from lynx.records import Pipeline
from lynx.recovery import RunJournal, recover_lost_runs
from lynx.relay import OutputRelay
from lynx.runner import run_pipeline, stop_on_failure

if TYPE_CHECKING:
    from lynx.selection import Selection


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
    recover_lost_runs(".")  # runs of a Lynx that was killed go into the history as lost, before new ones
    if options.detached:
        return _run_detached(options, stdin=stdin, stdout=stdout, environ=environ)
    config_file = _existing_config(options.config_file, stdin=stdin, stdout=stdout)
    pipeline = load_pipeline(config_file, overrides=options.overrides)
    selection = _selection(options, pipeline)
    check_launchers(pipeline, environ=environ)
    if options.background:
        from lynx.commands.background import start_in_background

        return start_in_background(options, pipeline, stdin=stdin, stdout=stdout, environ=environ)
    if options.log_file:
        check_pipeline_log_file(options.log_file, pipeline)
    color = color_wanted(stdout, dict(environ))
    log_file = _setup_logging(options, screen=stdout, color=color)
    return _run(
        options, pipeline, log_file, screen=stdout, color=color, stdin=stdin, environ=environ, selection=selection
    )[0]


def _selection(options: StartOptions, pipeline: Pipeline) -> Selection | None:
    """The steps --from, --until and --only pick (lynx.selection is loaded only when they are given)."""
    if options.from_ is None and options.until is None and not options.only:
        return None
    from lynx.selection import select_steps

    return select_steps(pipeline, from_=options.from_, until=options.until, only=options.only)


def _setup_logging(options: StartOptions, *, screen: TextIO | None, color: bool) -> Any:
    return setup_logging(
        level=getattr(logging, options.log_level),
        color=color,
        screen=screen,
        log_file=options.log_file,
        log_size=options.log_size,
        backup_count=options.log_backup_count,
    )


def _run(
    options: StartOptions,
    pipeline: Pipeline,
    log_file: Any,
    *,
    screen: TextIO | None,
    color: bool,
    stdin: TextIO,
    environ: Mapping[str, str],
    entry: Any = None,
    selection: Selection | None = None,
) -> tuple[int, str | None]:
    """Run the pipeline once or on its schedule, logging is set up.

    Returns:
        The exit code, and how it ended by itself ('done', 'run_failed', 'schedule_ended', 'error';
        None: stopped by a signal or Ctrl+C).
    """
    from lynx.watchdog import start_watchdog

    # First: it ends the running step should Lynx be killed (lynx.watchdog); it starts while Lynx sets up.
    watchdog = start_watchdog(grace=TERMINATE_GRACE, log_file=options.log_file)
    stdout = screen if screen is not None else sys.stdout
    output_screen = None if screen is None or options.log_level not in ("DEBUG", "INFO") else _binary(screen)
    name = (options.name or pipeline.name) if options.detached else None
    request = {"selection": selection.as_record()} if selection is not None else {}
    request.update(options.request)
    # Relative: the history follows the working directory if the project folder is renamed.
    history = recorder_for(".", pipeline.source, name, environ, request)
    journal = RunJournal(".", history.head, warn=get_logger().warning)
    notifier = _notifier(pipeline, history, options.log_file, environ)
    if notifier is not None:
        log_file = notifier.output_sink(log_file)  # the step output, and on to the log file
    relay = OutputRelay(output_screen, log_file=log_file)
    _raise_on_termination_signals()
    log = get_logger()
    cancel_left_jobs(log.info, log.warning, environ)
    if watchdog is not None:
        watchdog.adopted()  # before Lynx becomes a subreaper: init, not Lynx, must adopt it
    # What a finished step left running has a relay of its own: its lines never split the next step's.
    guard = StepGuard(
        leftover_output=OutputRelay(output_screen, log_file=log_file).write, watchdog=watchdog, scheduler=name
    )
    supervise_steps(guard)
    interactive = not options.non_interactive
    scheduled = pipeline.schedule is not None and not interactive and options.retry_of is None
    mode = "background" if options.detached else "schedule" if scheduled else "once"
    log.info(
        f"Lynx {__version__} started: PID {os.getpid()}, config {os.path.abspath(pipeline.source)}, mode {mode}.",
        extra={"file_only": True},
    )
    if pipeline.schedule is not None and interactive and options.retry_of is None:
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
            # The history first: the journal of the run goes once the history has its line.
            reporter=combine_reporters(history, entry, notifier, journal),
            selection=selection,
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
                last_run=_last_run(name or pipeline.name) if pipeline.schedule.catchup else None,
            )
        else:
            result = run_once()
    except KeyboardInterrupt:
        log.warning("Lynx was interrupted (Ctrl+C) and has stopped.")
        return EXIT_INTERRUPTED, None
    except Terminated as terminated:
        log.warning(f"Lynx received {signal.Signals(terminated.signum).name} and has stopped.")
        return terminated.exit_code, None
    finally:
        if notifier is not None:
            notifier.wait()  # within each channel's timeout; the history line is written already
        if watchdog is not None:
            watchdog.close()
    if scheduled:
        log.info("The schedule has ended.")
    code = EXIT_OK if result.ok else EXIT_FAILED
    if not scheduled:
        return code, "done" if result.ok else "run_failed"
    if result.interrupted and result.run_id is None:
        return code, "error"  # the schedule's job met a bug; its traceback is in the log
    return code, "run_failed" if not result.ok and not options.keep_running else "schedule_ended"


def _run_detached(options: StartOptions, *, stdin: TextIO, stdout: TextIO, environ: Mapping[str, str]) -> int:
    """The background scheduler: check everything ``-ni`` checks, say it is ready, then run.

    What fails before it is ready reaches ``lynx start -bg``, which shows it and removes the
    record: nothing started. What fails later goes to its log file (when it has one that could be
    opened) and to its record, so that ``lynx status`` shows why it ended.
    """
    from lynx.boot import announce_ready

    entry = _entry_reporter(options.name)
    pipeline = load_pipeline(options.config_file, overrides=options.overrides)
    selection = _selection(options, pipeline)
    check_launchers(pipeline, environ=environ)
    if pipeline.schedule is not None:
        from lynx.cron import trigger_of

        trigger = trigger_of(pipeline.schedule)
        if entry is not None:
            entry.next_fire = lambda now: trigger.get_next_fire_time(None, now.astimezone(trigger.timezone))
    # A log file is there once 'lynx start -bg' says it runs (so 'tail -f' can follow it at once), but
    # a FIFO is opened after: it waits for a reader, who may come only once 'lynx start -bg' returned.
    log_file = None if _is_fifo(options.log_file) else _setup_logging(options, screen=None, color=False)
    announce_ready()
    try:
        if log_file is None:
            log_file = _setup_logging(options, screen=None, color=False)
        code, ending = _run(
            options,
            pipeline,
            log_file,
            screen=None,
            color=False,
            stdin=stdin,
            environ=environ,
            entry=entry,
            selection=selection,
        )
    except LynxError as error:
        get_logger().error(f"Error: {error.format_message()}")
        if entry is not None:
            entry.ended("error", error.exit_code, f"Error: {error.format_message()}")
        raise
    except Exception as error:  # a bug: its traceback in the log, and why it ended in the record
        get_logger().exception("Lynx ended with an unexpected error.")
        if entry is not None:
            entry.ended("error", EXIT_FAILED, f"{type(error).__name__}: {error}")
        raise
    if entry is not None and ending is not None:
        entry.ended(ending, code)
    return code


def _is_fifo(path: str | None) -> bool:
    import stat

    try:
        return path is not None and stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _notifier(pipeline: Pipeline, history: Any, log_file: str | None, environ: Mapping[str, str]) -> Any:
    """The reporter that sends the config's notifications, if it has any (only then is lynx.notify imported)."""
    if not pipeline.channels:
        return None
    from lynx.notify.notifier import Notifier

    path = os.path.abspath(os.path.expanduser(log_file)) if log_file else None
    return Notifier(pipeline.channels, record=history.record, log_file=path, environ=environ)


def _last_run(name: str) -> Any:
    """When the newest recorded run of this schedule (scheduler or config ``name``) started, if any."""
    from datetime import datetime

    from lynx.history import read_runs

    try:
        runs = read_runs(os.getcwd(), limit=1, name=name)
        return datetime.fromisoformat(runs[0]["started_at"]) if runs else None
    except (OSError, ValueError, TypeError, KeyError):
        return None  # no history to go by: nothing to catch up


def _entry_reporter(name: str | None) -> Any:
    """The reporter that keeps this detached scheduler's ``.lynx/`` entry current, if it has one."""
    from pathlib import Path

    from lynx.state import EntryReporter, entry_path, read_entry

    if name is None:
        return None
    try:
        entry = read_entry(entry_path(Path.cwd(), name))
    except (OSError, LynxError):
        return None
    if entry.pid != os.getpid():
        return None
    # Relative: the entry follows the working directory if the project folder is renamed.
    return EntryReporter(entry, Path("."), warn=get_logger().warning)


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


def _raise_on_termination_signals() -> None:
    """SIGTERM and SIGHUP (the terminal closed) end Lynx like Ctrl+C does: steps first."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def _binary(stream: TextIO) -> BinaryIO:
    stream.flush()
    return getattr(stream, "buffer", stream)  # type: ignore[arg-type, no-any-return]  # a binary one, or as it is
