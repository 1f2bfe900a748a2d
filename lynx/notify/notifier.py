"""The notifier: a run reporter that sends each event to the channels that want it, never in the run's way.

Each delivery runs in a thread of its own (a channel's events in order: a Healthchecks start before
its end), bounded by the channel's ``timeout``, so a run and the next fire never wait for it. A
one-shot run waits for its deliveries before it exits (:meth:`Notifier.wait`). A failure to
deliver is one warning naming the channel masked, never a traceback and never the run's result.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from lynx.channels import Channel
from lynx.errors import Terminated
from lynx.notify.delivery import Context, NotifyError, scrub, secrets_of
from lynx.notify.event import END_EVENTS, Event, build_event
from lynx.notify.tail import LogTail, TailSink, capture_log
from lynx.outcome import RunResult, StepRecord, new_run_id
from lynx.records import Step

SENDERS = {
    "command": "lynx.notify.command",
    "webhook": "lynx.notify.webhook",
    "email": "lynx.notify.mail",
    "healthchecks": "lynx.notify.healthchecks",
    "apprise": "lynx.notify.apprise_channel",
}
# What a delivery may take beyond its channel's timeout before nobody waits for it any more
# (a hook's SIGKILL after its SIGTERM).
SLACK = 1.5


class _Delivery(threading.Thread):
    """One event to one channel; after the channel's previous delivery, so its events arrive in order."""

    # When nobody waits for it any more (monotonic clock).
    deadline: float

    def __init__(self, notifier: Notifier, channel: Channel, event: Event, previous: _Delivery | None) -> None:
        super().__init__(name=f"lynx-notify-{channel.number}", daemon=True)
        self.notifier = notifier
        self.channel = channel
        self.event = event
        self.previous = previous
        start = max(time.monotonic(), previous.deadline if previous is not None else 0.0)
        self.deadline = start + channel.timeout + SLACK
        # None once delivered; else why not (also while it has not finished).
        self.failure: str | None = f"no answer within {channel.timeout:g} s"
        # Set when it has ended. Not Thread.join/is_alive: a join cut short by Ctrl+C makes
        # is_alive() say False for a thread that still runs (Python up to 3.12).
        self.done = threading.Event()

    def run(self) -> None:
        try:
            if self.previous is not None:
                self.previous.done.wait(max(self.previous.deadline - time.monotonic(), 0))
            self.failure = self.notifier.deliver(self.channel, self.event)
        finally:
            self.done.set()

    def wait(self) -> bool:
        """Until it has ended or its deadline has passed; True if it has ended."""
        return self.done.wait(max(self.deadline - time.monotonic(), 0))


class Notifier:
    """Tells the ``channels`` about each run's start and end (see :class:`lynx.outcome.RunReporter`).

    Args:
        channels: the config's ``notify`` items.
        record: builds a run's history record (the history's own function: events carry it as is).
        log_file: the log file's path, for hook commands (``LYNX_LOG_FILE``).
        environ: Lynx's environment (hook commands get it; ``password_env`` is read from it).
        python: the interpreter of ``.py`` hook commands.
        logger: where failures are warned about and hook output said.
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        record: Callable[[RunResult], dict[str, Any]],
        log_file: str | None = None,
        environ: Mapping[str, str] = os.environ,
        python: str = sys.executable,
        logger: logging.Logger | None = None,
    ) -> None:
        self.channels = tuple(channels)
        self.record = record
        self.log = logger or logging.getLogger("lynx")
        self.context = Context(environ=environ, python=python, log_file=log_file, say=self.log.info)
        size = max((channel.log_tail for channel in self.channels), default=0)
        self.tail = LogTail(size) if size > 0 else None
        self._lock = threading.Lock()
        self._last: dict[int, _Delivery] = {}
        self._pending: list[_Delivery] = []
        # The channels' libraries (urllib, smtplib, Apprise) load while the first step runs, not after the run.
        kinds = sorted({channel.kind for channel in self.channels})
        threading.Thread(target=_load, args=(kinds,), name="lynx-notify-load", daemon=True).start()

    def output_sink(self, log_file: Any) -> Any:
        """What the output relay should write lines to: ``log_file`` (the handler, or None), and the tail."""
        if self.tail is None:
            return log_file
        capture_log(self.tail, self.log)
        return TailSink(self.tail, log_file)

    # --- the run reporter ---------------------------------------------------------------------

    def run_started(self, run_id: str, started_at: datetime) -> None:
        if self.tail is not None:
            self.tail.clear()
        self._send("start", RunResult(run_id=run_id, started_at=started_at), None)

    def step_started(self, step: Step, attempt: int) -> None:
        pass

    def step_finished(self, record: StepRecord) -> None:
        pass

    def run_finished(self, result: RunResult) -> None:
        self._send(END_EVENTS[result.result], result, result)

    # --- sending --------------------------------------------------------------------------------

    def _send(self, kind: str, for_record: RunResult, result: RunResult | None) -> None:
        channels = [channel for channel in self.channels if kind in channel.events]
        if not channels:
            return
        tail = self.tail.snapshot() if self.tail is not None else b""
        event = build_event(kind, self.record(for_record), result, tail)
        for channel in channels:
            self._dispatch(channel, event)

    def _dispatch(self, channel: Channel, event: Event) -> _Delivery:
        with self._lock:
            previous = self._last.get(channel.number)
            waiting = previous is not None and not previous.done.is_set()
            delivery = _Delivery(self, channel, event, previous if waiting else None)
            self._last[channel.number] = delivery
            self._pending = [each for each in self._pending if not each.done.is_set()] + [delivery]
        delivery.start()
        return delivery

    def deliver(self, channel: Channel, event: Event) -> str | None:
        """Send ``event`` on ``channel`` now; None when delivered, else why not (said as a warning too)."""
        try:
            importlib.import_module(SENDERS[channel.kind]).send(channel, event, self.context)  # type: ignore[attr-defined]
            return None
        except NotifyError as error:
            reason = str(error)
        except Exception as error:  # a library's surprise must not become a traceback
            reason = f"{type(error).__name__}: {error}"
        reason = scrub(reason, secrets_of(channel, self.context.environ))
        if event.kind != "test":
            self.log.warning(f"Could not notify {channel.label}: {reason.rstrip('.')}.")
        return reason

    def wait(self) -> None:
        """Until every delivery has ended or passed its deadline; a Ctrl+C or SIGTERM meanwhile ends the wait."""
        with self._lock:
            pending = [each for each in self._pending if not each.done.is_set()]
        try:
            for delivery in pending:
                delivery.wait()
        except (KeyboardInterrupt, Terminated) as error:
            # A second Ctrl+C (or a SIGTERM) while waiting: the run and its history line are done already.
            left = sum(not each.done.is_set() for each in pending)
            what = "Ctrl+C" if isinstance(error, KeyboardInterrupt) else signal.Signals(error.signum).name
            self.log.warning(f"Stopped waiting for {left} notification(s) ({what}).")
            return
        for delivery in pending:
            if not delivery.done.is_set():
                channel = delivery.channel
                self.log.warning(f"Could not notify {channel.label}: no answer within {channel.timeout:g} s.")

    def test(self) -> list[tuple[Channel, str | None]]:
        """Send one ``test`` event on every channel at once; each channel with None (delivered) or why not."""
        started_at = datetime.now().astimezone()
        run_id = new_run_id(started_at)
        event = build_event("test", self.record(RunResult(run_id=run_id, started_at=started_at)), None)
        deliveries = [self._dispatch(channel, event) for channel in self.channels]
        for delivery in deliveries:
            delivery.wait()
        return [(delivery.channel, delivery.failure) for delivery in deliveries]


def _load(kinds: list[str]) -> None:
    for kind in kinds:
        # A failure here is said when sending imports it again.
        with contextlib.suppress(Exception):
            importlib.import_module(SENDERS[kind])
