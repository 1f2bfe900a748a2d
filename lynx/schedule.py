"""Run the pipeline on every fire of an APScheduler CronTrigger, one run at a time."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from datetime import datetime
from typing import Any, Callable

from lynx.errors import ConfigError
from lynx.logs import get_logger
from lynx.outcome import RunResult
from lynx.process import StepGuard, describe_interruption, forwarded_signal
from lynx.records import Schedule

JOB_ID = "lynx-pipeline"


def run_on_schedule(
    schedule: Schedule,
    run: Callable[[], RunResult],
    *,
    keep_running: bool,
    guard: StepGuard,
    stdin_fd: int | None = None,
    on_next_run: Callable[[datetime | None], None] | None = None,
    stop_hint: str = "Press Ctrl+C to stop.",
) -> RunResult:
    """Block, running ``run`` on every fire, until a run fails (unless ``keep_running``) or input ends.

    Args:
        schedule: the cron fields.
        run: one run of the pipeline.
        keep_running: a failed run is logged and the schedule goes on.
        guard: ends the running step when the schedule is interrupted.
        stdin_fd: a terminal to watch: end of input (Ctrl+D) ends the schedule after the current run.
        on_next_run: told the next fire time whenever it is known: at start and after each run
            (None: no more fires).
        stop_hint: how to stop it, said with the first run time.

    Returns:
        The failed run that ended the schedule, the last run when the trigger has no more fire
        times, or a successful result when input ended.
        Ctrl+C and SIGTERM propagate as exceptions, after the running step has been ended.
    """
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
    from apscheduler.schedulers.blocking import BlockingScheduler

    from lynx.cron import TimezoneError, describe

    log = get_logger()
    try:
        trigger = schedule.trigger()
    except TimezoneError as error:
        raise ConfigError(f"cron: {error}") from None
    scheduler = BlockingScheduler(timezone=trigger.timezone)
    grace = schedule.misfire_grace_time
    outcome: list[RunResult] = []
    running = threading.Lock()

    def next_run() -> str:
        job = scheduler.get_job(JOB_ID)
        when = job.next_run_time if job is not None else None
        if on_next_run is not None:
            on_next_run(when)
        return describe(when) if when is not None else "never"

    def job() -> None:
        with running:
            try:
                result = run()
            except Exception:  # a bug: keep its traceback, end the schedule
                log.exception("The run failed with an unexpected error.")
                result = RunResult(interrupted=True)
                outcome.append(result)
                _shutdown(scheduler)
                return
            if guard.stopping:
                return
            if not result.ok and not keep_running:
                if on_next_run is not None:
                    on_next_run(None)
                log.error("The run failed: ending the schedule.", extra={"color": "red"})
                outcome.append(result)
                _shutdown(scheduler)
                return
            if scheduler.get_job(JOB_ID) is None:
                if on_next_run is not None:
                    on_next_run(None)
                log.info("The schedule has no more fire times.")
                outcome.append(result)
                _shutdown(scheduler)
            elif not result.ok:
                log.warning(f"The run failed; --keep-running: next run at {next_run()}.")
            else:
                log.info(f"Next run at {next_run()}.")

    def on_event(event: JobEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            # This event carries the list of fire times it refused, not a single one.
            when = describe(event.scheduled_run_times[-1])
            log.warning(f"Skipped the run scheduled at {when}: the previous run is still going.")
        else:
            when = describe(event.scheduled_run_time)
            log.warning(f"Missed the run scheduled at {when}: it is more than {grace:g} s late.")

    first = trigger.get_next_fire_time(None, datetime.now(trigger.timezone))
    # run_on_start: the job's first run is now; APScheduler then follows the trigger. Else the first
    # fire is the one said below (with a jitter, asking the trigger again would give another).
    start_now = datetime.now(trigger.timezone) if schedule.run_on_start else None
    scheduler.add_job(
        job,
        trigger,
        id=JOB_ID,
        max_instances=1,
        coalesce=schedule.coalesce,
        misfire_grace_time=grace,
        **({"next_run_time": start_now or first} if start_now or first else {}),
    )
    scheduler.add_listener(on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
    when = f"at {describe(first)}" if first else "never"
    if start_now is not None:
        when = f"now (run_on_start), then {when}"
    log.info(f"Lynx is scheduled: first run {when}. {stop_hint}")
    if on_next_run is not None:
        on_next_run(start_now or first)
    if stdin_fd is not None:
        _watch_for_end_of_input(stdin_fd, lambda: _end_of_input(scheduler))
    try:
        scheduler.start()
    except BaseException as error:
        guard.stop(describe_interruption(error), forwarded_signal(error))
        _shutdown(scheduler, wait=True)
        raise
    # The scheduler has stopped; a run may still be finishing (after Ctrl+D).
    with running:
        pass
    return outcome[0] if outcome else RunResult()


def _end_of_input(scheduler: Any) -> None:
    get_logger().info("End of input (Ctrl+D): no more runs will start.")
    _shutdown(scheduler)


def _shutdown(scheduler: Any, wait: bool = False) -> None:
    """Stop the scheduler from any thread; a second call (a failed run racing Ctrl+D) is harmless."""
    from apscheduler.schedulers import SchedulerNotRunningError

    with contextlib.suppress(SchedulerNotRunningError):
        scheduler.shutdown(wait=wait)


def _in_foreground(fd: int) -> bool:
    """Whether this process owns the terminal: a background job (``lynx start -ni &``) must not
    read it, or the shell's job control stops the whole scheduler (SIGTTIN)."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


def _watch_for_end_of_input(fd: int, on_end: Callable[[], None]) -> None:
    """Call ``on_end`` when the terminal ``fd`` reaches end of input, whenever Lynx is in the
    foreground: from the start, or after ``fg`` (a shell gives a running background job the
    terminal without a signal, so the watcher looks each time the terminal has input)."""
    import select
    import time

    # A read from the background fails with EIO instead of stopping Lynx (SIGTTIN).
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            events = poller.poll()
            if any(event & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, event in events):
                return
            if not _in_foreground(fd):
                time.sleep(0.2)  # the shell's input, not Lynx's: the shell reads it soon
                continue
            try:
                if os.read(fd, 4096):
                    continue
            except OSError:  # sent to the background since the check, or non-blocking
                time.sleep(0.2)
                continue
            on_end()
            return

    threading.Thread(target=watch, name="lynx-stdin", daemon=True).start()
