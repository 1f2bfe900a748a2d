"""What a run and its steps came to, and who is told as it goes: the records the runner fills, the history
writes, the summary shows and reporters receive. It imports nothing of Lynx's but the config's records."""

from __future__ import annotations

import enum
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, Sequence

from lynx.records import Step


class Decision(enum.Enum):
    RERUN_STEP = "rerun the step"
    RESTART = "rerun the pipeline"
    STOP = "stop"


@dataclass(frozen=True)
class StepResult:
    step: Step
    returncode: int
    # Ended by Lynx after its timeout.
    timed_out: bool = False
    # Why the step could not be started at all, else None.
    launch_error: str | None = None

    @property
    def description(self) -> str:
        if self.timed_out:
            return f"{self.step.label} timed out after {self.step.timeout:g} s and was ended."
        if self.launch_error is not None:
            return f"{self.step.label} could not be started: {self.launch_error}"
        code = self.returncode
        if code < 0:
            return f"{self.step.label} failed with exit code {code} (killed by {signal_name(-code)})."
        return f"{self.step.label} failed with exit code {code}."


@dataclass
class StepRecord:
    """What became of one step in a run: its last attempt's outcome, over all its attempts."""

    number: int
    script: str
    title: str
    argv: tuple[str, ...]
    # How often the step ran in this run (retries, reruns from the dialog, pipeline restarts).
    attempts: int = 0
    returncode: int | None = None
    # The time all its attempts took together.
    duration_s: float = 0.0
    # 'ok', 'failed', 'interrupted' or 'skipped'.
    result: str = "interrupted"
    # The last attempt was ended by Lynx after the step's timeout.
    timed_out: bool = False
    # Set for a step that ran as a SLURM job.
    job_id: str | None = None
    node: str | None = None
    # When its first attempt started and its last one ended (None: it never started).
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # This matrix combination's values; why a skipped step was skipped.
    matrix: tuple[tuple[str, str], ...] = ()
    reason: str | None = None

    @property
    def label(self) -> str:
        return f"Step {self.number} ({self.title})"


@dataclass(frozen=True)
class RunResult:
    """How one run of the pipeline ended: all steps done, a step failed, or interrupted."""

    failed: StepResult | None = None
    # Known from the run's start: the history, the scheduler's entry and notifications name the run by it.
    run_id: str | None = None
    interrupted: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float = 0.0
    # The steps that ran and those skipped (not selected, or needing one that failed), in config order.
    steps: tuple[StepRecord, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.failed is None and not self.interrupted

    @property
    def result(self) -> str:
        """'ok', 'failed' or 'interrupted'."""
        if self.interrupted:
            return "interrupted"
        return "ok" if self.failed is None else "failed"

    @property
    def failed_step(self) -> int | None:
        return self.failed.step.number if self.failed is not None else None


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number that names no signal."""
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class RunReporter(Protocol):
    """Told about a run as it goes (the run history, a background scheduler's entry).

    Called from the thread that runs the pipeline, and, when steps run side by side, from each step's
    own thread, one call at a time (:class:`Serialized`); a reporter must not block. Subclass it for
    no-op defaults, or just provide the four methods.
    """

    def run_started(self, run_id: str, started_at: datetime) -> None:
        """A run begins; ``run_id`` (see :func:`new_run_id`) names it from now on."""

    def step_started(self, step: Step, attempt: int) -> None:
        """``step`` starts its ``attempt``-th run (1 for the first) in this run."""

    def step_finished(self, record: StepRecord) -> None:
        """An attempt of a step has ended; ``record`` counts all its attempts so far."""

    def run_finished(self, result: RunResult) -> None:
        """The run has ended (also when interrupted by Ctrl+C or a signal, just before that propagates)."""


class Reporters(RunReporter):
    """Pass every event on to several reporters, in order."""

    def __init__(self, reporters: Sequence[RunReporter]) -> None:
        self.reporters = tuple(reporters)

    def run_started(self, run_id: str, started_at: datetime) -> None:
        for reporter in self.reporters:
            reporter.run_started(run_id, started_at)

    def step_started(self, step: Step, attempt: int) -> None:
        for reporter in self.reporters:
            reporter.step_started(step, attempt)

    def step_finished(self, record: StepRecord) -> None:
        for reporter in self.reporters:
            reporter.step_finished(record)

    def run_finished(self, result: RunResult) -> None:
        for reporter in self.reporters:
            reporter.run_finished(result)


def combine_reporters(*reporters: RunReporter | None) -> RunReporter | None:
    """One reporter for all the given ones (None entries left out); None when there are none."""
    present = [reporter for reporter in reporters if reporter is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else Reporters(present)


def new_run_id(started_at: datetime) -> str:
    """Sortable by start time, unique by its random tail: ``20261122T231502-5f0c9a2e41b7``."""
    return f"{started_at.strftime('%Y%m%dT%H%M%S')}-{os.urandom(6).hex()}"


class Serialized(RunReporter):
    """One reporter call at a time: steps that run side by side end in threads of their own."""

    def __init__(self, reporter: RunReporter) -> None:
        self.reporter = reporter
        self.lock = threading.Lock()

    def run_started(self, run_id: str, started_at: datetime) -> None:
        with self.lock:
            self.reporter.run_started(run_id, started_at)

    def step_started(self, step: Step, attempt: int) -> None:
        with self.lock:
            self.reporter.step_started(step, attempt)

    def step_finished(self, record: StepRecord) -> None:
        with self.lock:
            self.reporter.step_finished(record)

    def run_finished(self, result: RunResult) -> None:
        with self.lock:
            self.reporter.run_finished(result)
