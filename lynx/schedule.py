"""Run the pipeline on every fire of an APScheduler CronTrigger, one run at a time."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable

from lynx.ending import describe_interruption, forwarded_signal
from lynx.logs import get_logger
from lynx.outcome import RunResult
from lynx.process import StepGuard
from lynx.records import Schedule

JOB_ID = "lynx-pipeline"
# A wall clock that goes back by at least this much was stepped (NTP slews it by at most 0.5 ms a second).
CLOCK_STEP = 1.0
# Where timed waits end by the wall clock, a step back would stretch the scheduler's wait by as much:
# there it looks at the clock at least this often.
WALL_CLOCK_LOOK = 60.0


def run_on_schedule(
    schedule: Schedule,
    run: Callable[[], RunResult],
    *,
    keep_running: bool,
    guard: StepGuard,
    stdin_fd: int | None = None,
    on_next_run: Callable[[datetime | None], None] | None = None,
    stop_hint: str = "Press Ctrl+C to stop.",
    last_run: datetime | None = None,
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
        last_run: when this schedule's newest recorded run started: with ``catchup``, a fire missed
            since then (while Lynx was down) runs once at start.

    Returns:
        The failed run that ended the schedule, the last run when the trigger has no more fire
        times, or a successful result when input ended.
        Ctrl+C and SIGTERM propagate as exceptions, after the running step has been ended.
    """
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent

    from lynx.cron import describe, trigger_of

    log = get_logger()
    trigger = trigger_of(schedule)
    watch = WallClockWatch()
    scheduler = _scheduler_class()(lambda: clock_went_back(watch.went_back()), timezone=trigger.timezone)
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

    def clock_went_back(seconds: float) -> None:
        """Cron's rule for a clock stepped back (an NTP step, a restored VM): a schedule whose hour starts
        with '*' fires by the new time at once; one with a fixed hour runs each wall-clock time once."""
        job = scheduler.get_job(JOB_ID) if seconds else None
        if job is None or job.next_run_time is None:
            return
        back = f"{seconds:.1f}".rstrip("0").rstrip(".")
        if getattr(trigger, "once_per_wall_time", False):
            log.warning(
                f"The clock went back by {back} s: the next run stays at {describe(job.next_run_time)} "
                "(a schedule with a fixed hour runs each wall-clock time once)."
            )
            return
        # The wait that just ended was for a fire; one in this very second by the new time still counts.
        when = trigger.get_next_fire_time(None, datetime.now(trigger.timezone).replace(microsecond=0))
        if when is not None:
            scheduler.modify_job(JOB_ID, next_run_time=when)
        log.warning(f"The clock went back by {back} s: next run at {next_run()}.")

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
    missed = None if start_now is not None else missed_fire(schedule, trigger, last_run)
    if missed is not None:
        log.info(f"Catching up the run missed at {describe(missed)}.")
        start_now = datetime.now(trigger.timezone)
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
        when = f"now ({'catching up' if missed is not None else 'run_on_start'}), then {when}"
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


class WallClockWatch:
    """Notices the wall clock going back: its distance from the monotonic clock shrinks."""

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._offset = self._read()

    def _read(self) -> float:
        # The wall clock read between two monotonic readings close together: a pause of this thread
        # (a busy machine) must not pass for a step.
        for _ in range(3):
            before = self._monotonic()
            wall = self._wall()
            after = self._monotonic()
            if after - before < 0.1:
                break
        return wall - (before + after) / 2

    def went_back(self) -> float:
        """How many seconds the wall clock went back since the last look; 0.0 if it did not step back."""
        offset = self._read()
        back = self._offset - offset
        self._offset = offset
        return back if back >= CLOCK_STEP else 0.0


def _waits_by_monotonic_clock() -> bool:
    """Whether threading's timed waits end by the monotonic clock, which a stepped wall clock leaves
    alone: CPython uses ``sem_clockwait`` where it was built with it (Linux, glibc 2.30 and later)."""
    import sysconfig

    return sys.platform.startswith("linux") and bool(sysconfig.get_config_var("HAVE_SEM_CLOCKWAIT"))


@functools.cache
def _scheduler_class() -> Any:
    """The scheduler class, made on first use so that APScheduler is imported only by schedules."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    longest_wait = None if _waits_by_monotonic_clock() else WALL_CLOCK_LOOK

    class WallClockScheduler(BlockingScheduler):  # type: ignore[misc]
        """A BlockingScheduler that tells ``on_wake`` each time it wakes, before it looks for due jobs."""

        def __init__(self, on_wake: Callable[[], None], **options: Any) -> None:
            super().__init__(**options)
            self._on_wake = on_wake

        def _process_jobs(self) -> float | None:
            # APScheduler 3 calls this whenever its wait ends (a job is due, or it was woken): a clock
            # stepped back is noticed there without waking more often than the schedule does.
            self._on_wake()
            wait: float | None = super()._process_jobs()
            if longest_wait is not None and wait is not None:
                wait = min(wait, longest_wait)
            return wait

    return WallClockScheduler


def missed_fire(schedule: Schedule, trigger: Any, last_run: datetime | None, now: datetime | None = None) -> Any:
    """With ``catchup``: the first fire since ``last_run`` (or, with a number of seconds, within that many
    seconds of now) that is already past; None when none was missed or catch-up is off.

    Several missed fires run once, as coalesce does: only the first is needed to know.
    """
    if not schedule.catchup or last_run is None:
        return None
    now = now or datetime.now(trigger.timezone)
    since = last_run.astimezone(trigger.timezone)
    if schedule.catchup is not True:
        since = max(since, now - timedelta(seconds=float(schedule.catchup)))
    # A microsecond on: the fire that started the last run is not a missed one.
    fire = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
    return fire if fire is not None and fire <= now else None


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
