"""Run the pipeline on every fire of an APScheduler CronTrigger, one run at a time."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from datetime import datetime
from typing import Any, Callable

from lynx.config import Schedule
from lynx.logs import get_logger
from lynx.process import StepGuard, describe_interruption
from lynx.runner import RunResult

# A fire that comes late (a busy machine, a suspended process) still runs if it is at most
# this many seconds late; fires missed while a run is going are skipped, not queued.
MISFIRE_GRACE = 60
JOB_ID = "lynx-pipeline"


def run_on_schedule(
    schedule: Schedule,
    run: Callable[[], RunResult],
    *,
    keep_running: bool,
    guard: StepGuard,
    stdin_fd: int | None = None,
) -> RunResult:
    """Block, running ``run`` on every fire, until a run fails (unless ``keep_running``) or input ends.

    Args:
        schedule: the cron fields.
        run: one run of the pipeline.
        keep_running: a failed run is logged and the schedule goes on.
        guard: ends the running step when the schedule is interrupted.
        stdin_fd: a terminal to watch: end of input (Ctrl+D) ends the schedule after the current run.

    Returns:
        The failed run that ended the schedule, the last run when the trigger has no more fire
        times, or a successful result when input ended.
        Ctrl+C and SIGTERM propagate as exceptions, after the running step has been ended.
    """
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
    from apscheduler.schedulers.blocking import BlockingScheduler

    log = get_logger()
    trigger = schedule.trigger()
    scheduler = BlockingScheduler(timezone=trigger.timezone)
    outcome: list[RunResult] = []
    running = threading.Lock()

    def next_run() -> str:
        job = scheduler.get_job(JOB_ID)
        return _format(job.next_run_time) if job is not None else "never"

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
                log.error("The run failed: ending the schedule.", extra={"color": "red"})
                outcome.append(result)
                _shutdown(scheduler)
                return
            if scheduler.get_job(JOB_ID) is None:
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
            when = _format(event.scheduled_run_times[-1])
            log.warning(f"Skipped the run scheduled at {when}: the previous run is still going.")
        else:
            when = _format(event.scheduled_run_time)
            log.warning(f"Missed the run scheduled at {when}: it is more than {MISFIRE_GRACE} s late.")

    scheduler.add_job(
        job,
        trigger,
        id=JOB_ID,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=MISFIRE_GRACE,
    )
    scheduler.add_listener(on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
    first = trigger.get_next_fire_time(None, datetime.now(trigger.timezone))
    log.info(f"Lynx is scheduled: first run at {_format(first) if first else 'never'}. Press Ctrl+C to stop.")
    if stdin_fd is not None and _in_foreground(stdin_fd):
        _watch_for_end_of_input(stdin_fd, lambda: _end_of_input(scheduler))
    try:
        scheduler.start()
    except BaseException as error:
        guard.stop(describe_interruption(error))
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
    # Sent to the background (Ctrl+Z, bg) later, a read fails with EIO instead of stopping Lynx.
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            return
        on_end()

    threading.Thread(target=watch, name="lynx-stdin", daemon=True).start()


def _format(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
