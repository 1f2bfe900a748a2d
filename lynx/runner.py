"""Run a pipeline's steps in order; on a failure, ask an injected ``on_failure`` what to do."""

from __future__ import annotations

import enum
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping, Protocol, Sequence

from lynx.launch import launch
from lynx.logs import OutputRelay, get_logger
from lynx.process import StepGuard
from lynx.records import Pipeline, Step
from lynx.summary import summary_lines

OUTPUT_HEAD = "-" * 20 + " Output " + "-" * 20
OUTPUT_FOOT = "-" * 48


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
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"{self.step.label} failed with exit code {code} (killed by {name})."
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
    # 'ok', 'failed' or 'interrupted'.
    result: str = "interrupted"
    # The last attempt was ended by Lynx after the step's timeout.
    timed_out: bool = False
    # Set for a step that ran as a SLURM job.
    job_id: str | None = None
    node: str | None = None

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
    # The steps that ran, in order.
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


class RunReporter(Protocol):
    """Told about a run as it goes (the run history, a background scheduler's entry).

    Called from the thread that runs the pipeline; a reporter must not block it. Subclass it
    for no-op defaults, or just provide the four methods.
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


def stop_on_failure(result: StepResult) -> Decision:
    """The non-interactive answer to a failed step: end the run."""
    return Decision.STOP


def run_pipeline(
    pipeline: Pipeline,
    *,
    on_failure: Callable[[StepResult], Decision],
    relay: OutputRelay,
    guard: StepGuard,
    environ: Mapping[str, str] = os.environ,
    inherit_stdin: bool = True,
    python: str = sys.executable,
    reporter: RunReporter | None = None,
) -> RunResult:
    """Run every step in order with ``python``, then log the run's summary.

    Args:
        pipeline: what to run.
        on_failure: asked after each failed step.
        relay: where the steps' output goes.
        guard: lets another thread stop the run (the scheduler on Ctrl+C or SIGTERM).
        environ: the steps' environment (PYTHONUNBUFFERED=1 is added).
        inherit_stdin: the steps read Lynx's standard input (else an empty one).
        python: the interpreter that runs each script.
        reporter: told when the run and each step start and end.
    """
    started_at = datetime.now().astimezone()
    start = time.monotonic()
    run_id = new_run_id(started_at)
    records: dict[int, StepRecord] = {}
    if reporter is not None:
        reporter.run_started(run_id, started_at)
    outcome = RunResult(interrupted=True)
    try:
        outcome = _run_steps(pipeline, on_failure, relay, guard, environ, inherit_stdin, python, reporter, records)
    finally:
        # Also on Ctrl+C or SIGTERM in the foreground: the summary and the history still say how far it got.
        result = RunResult(
            failed=outcome.failed,
            run_id=run_id,
            interrupted=outcome.interrupted,
            started_at=started_at,
            ended_at=datetime.now().astimezone(),
            duration_s=time.monotonic() - start,
            steps=tuple(records[number] for number in sorted(records)),
        )
        _log_summary(result)
        if reporter is not None:
            reporter.run_finished(result)
    return result


def _run_steps(
    pipeline: Pipeline,
    on_failure: Callable[[StepResult], Decision],
    relay: OutputRelay,
    guard: StepGuard,
    environ: Mapping[str, str],
    inherit_stdin: bool,
    python: str,
    reporter: RunReporter | None,
    records: dict[int, StepRecord],
) -> RunResult:
    """The steps in order, a loop, so restarting never deepens the stack; ``records`` fills as they run."""
    log = get_logger()
    failures: list[StepResult] = []
    index = 0
    attempt = 1
    while index < len(pipeline.steps):
        if guard.stopping:
            return RunResult(interrupted=True)
        step = pipeline.steps[index]
        argv = step.argv(python)
        record = records.get(step.number)
        if record is None:
            record = records[step.number] = StepRecord(step.number, step.script, step.title, argv)
        record.attempts += 1
        if reporter is not None:
            reporter.step_started(step, record.attempts)
        attempts = step.retries + 1
        of = f" (attempt {attempt} of {attempts})" if attempts > 1 else ""
        log.info(f"Processing Step {step.number}: {step.title}{of}...", extra={"color": "yellow"})
        log.info(OUTPUT_HEAD)
        record.result = "interrupted"  # until it ends by itself
        began = time.monotonic()
        try:
            ended = launch(
                step,
                relay.write,
                pipeline=pipeline.name,
                guard=guard,
                python=python,
                environ=environ,
                inherit_stdin=inherit_stdin,
            )
        finally:
            record.duration_s += time.monotonic() - began
            relay.flush()
            log.info(OUTPUT_FOOT)
        record.returncode = ended.returncode
        record.timed_out = ended.timed_out
        record.job_id, record.node = ended.job_id, ended.node
        if guard.stopping:
            if reporter is not None:
                reporter.step_finished(record)
            log.warning(f"{step.label} was interrupted.")
            return RunResult(interrupted=True)
        succeeded = ended.returncode == 0 and not ended.timed_out
        record.result = "ok" if succeeded else "failed"
        if reporter is not None:
            reporter.step_finished(record)
        if succeeded:
            log.info(f"{step.label} completed successfully.", extra={"color": "green"})
            index += 1
            attempt = 1
            continue
        result = StepResult(step, ended.returncode, timed_out=ended.timed_out, launch_error=ended.launch_error)
        log.error(result.description, extra={"color": "red"})
        if attempt < attempts:
            delay = step.retry_wait(attempt)
            attempt += 1
            when = f"in {delay:g} s" if delay > 0 else "now"
            log.warning(f"Retrying {step.label} {when} (attempt {attempt} of {attempts}).")
            # Ctrl+C and SIGTERM end the wait at once: the guard wakes it, or the signal interrupts it.
            if delay > 0 and guard.wait(delay):
                return RunResult(interrupted=True)
            continue
        attempt = 1
        if step.continue_on_error:
            log.warning(f"{step.label} failed; continuing with the next step (continue_on_error).")
            failures.append(result)
            index += 1
            continue
        decision = on_failure(result)
        if decision is Decision.RERUN_STEP:
            log.info("Restarting step...")
        elif decision is Decision.RESTART:
            log.info("Restarting pipeline...", extra={"color": "yellow"})
            index = 0
            failures.clear()
        else:
            return RunResult(failed=result)
    if failures:
        labels = ", ".join(result.step.label for result in failures)
        log.error(f"The run failed: {labels} failed (continue_on_error let it go on).", extra={"color": "red"})
        return RunResult(failed=failures[0])
    count = len(pipeline.steps)
    log.info(f"All {count} step{'s' if count != 1 else ''} completed successfully.", extra={"color": "green"})
    return RunResult()


def _log_summary(result: RunResult) -> None:
    """pre-commit's ending: one line per step that ran, with its result and time, and a total."""
    if not result.steps:
        return
    log = get_logger()
    for text, outcome in summary_lines(
        [(r.label, r.result, r.duration_s, r.returncode, r.attempts, r.timed_out) for r in result.steps],
        result.result,
        result.duration_s,
    ):
        log.info(text, extra={"color": _COLORS[outcome]})


_COLORS = {"ok": "green", "failed": "red", "interrupted": "yellow", None: None}
