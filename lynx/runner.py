"""Run a pipeline's steps, each once what it waits for has ended; on a failure, ask an injected
``on_failure`` what to do."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Mapping

from lynx.dispatch import FAILED, INTERRUPTED, OK, TOLERATED, dispatch
from lynx.ending import describe_interruption, forwarded_signal
from lynx.launch import launch
from lynx.logs import get_logger
from lynx.outcome import (
    Decision,
    RunReporter,
    RunResult,
    Serialized,
    StepRecord,
    StepResult,
    new_run_id,
)
from lynx.plan import make_plan, parallel_limit, side_by_side
from lynx.process import StepGuard
from lynx.records import Pipeline
from lynx.relay import OutputRelay
from lynx.summary import summary_lines

if TYPE_CHECKING:
    from lynx.selection import Selection

OUTPUT_HEAD = "-" * 20 + " Output " + "-" * 20
OUTPUT_FOOT = "-" * 48


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
    selection: Selection | None = None,
) -> RunResult:
    """Run every step (or the selected ones) with ``python``, then log the run's summary.

    Args:
        pipeline: what to run.
        on_failure: asked after each failed step.
        relay: where the steps' output goes.
        guard: lets another thread stop the run (the scheduler on Ctrl+C or SIGTERM).
        environ: the steps' environment (PYTHONUNBUFFERED=1 is added).
        inherit_stdin: the steps read Lynx's standard input (else an empty one).
        python: the interpreter that runs each script.
        reporter: told when the run and each step start and end.
        selection: only these steps run (``--from``, ``--until``, ``--only``); the others are skipped,
            and count as done for the steps that need them.
    """
    started_at = datetime.now().astimezone()
    start = time.monotonic()
    run_id = new_run_id(started_at)
    records: dict[int, StepRecord] = {}
    if reporter is not None:
        reporter.run_started(run_id, started_at)
    outcome = RunResult(interrupted=True)
    try:
        outcome = _run_steps(
            pipeline, on_failure, relay, guard, environ, inherit_stdin, python, reporter, records, selection
        )
    finally:
        # Also on Ctrl+C or SIGTERM in the foreground: the summary and the history still say how far it got.
        result = RunResult(
            failed=outcome.failed,
            run_id=run_id,
            interrupted=outcome.interrupted,
            started_at=started_at,
            ended_at=datetime.now().astimezone(),
            duration_s=time.monotonic() - start,
            steps=tuple(records[index] for index in sorted(records)),
        )
        _log_summary(result, pipeline.parallel)
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
    selection: Selection | None,
) -> RunResult:
    """The steps, each once what it waits for has ended (lynx.dispatch); after a failure, ``on_failure``
    decides, in a loop, so restarting never deepens the stack; ``records`` fills as they run."""
    log = get_logger()
    plan = make_plan(pipeline)
    limit = parallel_limit(pipeline)
    tagged = side_by_side(plan, limit)
    if tagged and reporter is not None:
        reporter = Serialized(reporter)  # steps end in threads of their own
    run = _StepRunner(pipeline, relay, guard, environ, inherit_stdin, python, reporter, records, tagged)
    chosen = [selection is None or step.number in selection.numbers for step in pipeline.steps]
    if selection is not None:
        for index, picked in enumerate(chosen):
            if not picked:
                run.leave_out(index, selection)
    todo = list(chosen)
    while True:
        ended = dispatch(
            plan,
            todo,
            run.run_one,
            limit=limit,
            stopping=lambda: guard.stopping,
            on_skip=lambda index, group: run.skip(index, plan.members[group][0]),
            on_interrupt=lambda error: guard.stop(describe_interruption(error), forwarded_signal(error)),
        )
        if guard.stopping or INTERRUPTED in ended:
            return RunResult(interrupted=True)
        failed = [index for index, outcome in enumerate(ended) if outcome == FAILED]
        if not failed:
            break
        decision = on_failure(run.failures[failed[0]])
        if decision is Decision.RERUN_STEP:
            log.info("Restarting step...")
            # The failed steps, what needs them, and what never started; what succeeded (or failed and
            # was let go) stays done.
            todo = [todo[index] and outcome not in (OK, TOLERATED) for index, outcome in enumerate(ended)]
        elif decision is Decision.RESTART:
            log.info("Restarting pipeline...", extra={"color": "yellow"})
            todo = list(chosen)
            run.failures.clear()
        else:
            return RunResult(failed=run.failures[failed[0]])
    if run.failures:
        failures = [run.failures[index] for index in sorted(run.failures)]
        labels = ", ".join(result.step.label for result in failures)
        log.error(f"The run failed: {labels} failed (continue_on_error let it go on).", extra={"color": "red"})
        return RunResult(failed=failures[0])
    count = sum(chosen)
    selected = " selected" if selection is not None else ""
    log.info(f"All {count}{selected} step{'s' if count != 1 else ''} completed successfully.", extra={"color": "green"})
    return RunResult()


class _StepRunner:
    """Runs one step to its end, retries included, for the dispatcher; keeps its record and says each move."""

    def __init__(
        self,
        pipeline: Pipeline,
        relay: OutputRelay,
        guard: StepGuard,
        environ: Mapping[str, str],
        inherit_stdin: bool,
        python: str,
        reporter: RunReporter | None,
        records: dict[int, StepRecord],
        tagged: bool,
    ) -> None:
        self.pipeline = pipeline
        self.relay = relay
        self.guard = guard
        self.environ = environ
        self.inherit_stdin = inherit_stdin
        self.python = python
        self.reporter = reporter
        self.records = records
        # Several steps may run at once: each output line carries its step's tag, and there is no frame.
        self.tagged = tagged
        # The steps whose last attempt failed, by index.
        self.failures: dict[int, StepResult] = {}

    def record(self, index: int) -> StepRecord:
        record = self.records.get(index)
        if record is None:
            step = self.pipeline.steps[index]
            record = self.records[index] = StepRecord(
                step.number, step.script, step.title, step.argv(self.python), matrix=step.matrix
            )
        return record

    def leave_out(self, index: int, selection: Selection) -> None:
        """Step ``index`` is not among the selected ones: it does not run, and says so."""
        step = self.pipeline.steps[index]
        record = self.record(index)
        record.result = "skipped"
        record.reason = "not selected"
        get_logger().info(f"Skipping {step.label}: not selected ({selection.said}).", extra={"color": "yellow"})

    def skip(self, index: int, cause: int) -> None:
        """Step ``index`` will not run: it needs the step of index ``cause``, which failed or was skipped."""
        step, needed = self.pipeline.steps[index], self.pipeline.steps[cause]
        what = f"Step {needed.number}" if needed.matrix else needed.label
        record = self.record(index)
        record.result = "skipped"
        record.reason = f"needs step {needed.number}"
        get_logger().warning(f"Skipping {step.label}: it needs {what}, which did not succeed.")

    def run_one(self, index: int) -> str:
        """Run step ``index`` until it succeeds or its attempts are used up: OK, FAILED, TOLERATED or INTERRUPTED."""
        log = get_logger()
        guard = self.guard
        step = self.pipeline.steps[index]
        record = self.record(index)
        out = self.relay.tagged(step.tag) if self.tagged else self.relay
        attempts = step.retries + 1
        attempt = 1
        while True:
            if guard.stopping:
                return INTERRUPTED
            record.attempts += 1
            if self.reporter is not None:
                self.reporter.step_started(step, record.attempts)
            of = f" (attempt {attempt} of {attempts})" if attempts > 1 else ""
            log.info(f"Processing Step {step.number}: {step.title}{of}...", extra={"color": "yellow"})
            if not self.tagged:
                log.info(OUTPUT_HEAD)
            record.result = "interrupted"  # until it ends by itself
            began = time.monotonic()
            if record.started_at is None:
                record.started_at = datetime.now().astimezone()
            try:
                ended = launch(
                    step,
                    out.write,
                    pipeline=self.pipeline.name,
                    guard=guard,
                    python=self.python,
                    environ=self.environ,
                    inherit_stdin=self.inherit_stdin,
                )
            finally:
                record.duration_s += time.monotonic() - began
                record.ended_at = datetime.now().astimezone()
                out.flush()
                if not self.tagged:
                    log.info(OUTPUT_FOOT)
            record.returncode = ended.returncode
            record.timed_out = ended.timed_out
            record.job_id, record.node = ended.job_id, ended.node
            if guard.stopping:
                if self.reporter is not None:
                    self.reporter.step_finished(record)
                log.warning(f"{step.label} was interrupted.")
                return INTERRUPTED
            succeeded = ended.returncode == 0 and not ended.timed_out
            record.result = "ok" if succeeded else "failed"
            if self.reporter is not None:
                self.reporter.step_finished(record)
            if succeeded:
                log.info(f"{step.label} completed successfully.", extra={"color": "green"})
                self.failures.pop(index, None)
                return OK
            result = StepResult(step, ended.returncode, timed_out=ended.timed_out, launch_error=ended.launch_error)
            log.error(result.description, extra={"color": "red"})
            if attempt < attempts:
                delay = step.retry_wait(attempt)
                attempt += 1
                when = f"in {delay:g} s" if delay > 0 else "now"
                log.warning(f"Retrying {step.label} {when} (attempt {attempt} of {attempts}).")
                # Ctrl+C and SIGTERM end the wait at once: the guard wakes it, or the signal interrupts it.
                if delay > 0 and guard.wait(delay):
                    return INTERRUPTED
                continue
            self.failures[index] = result
            if step.continue_on_error:
                going_on = (
                    "the steps that do not need it go on" if self.pipeline.parallel else "continuing with the next step"
                )
                log.warning(f"{step.label} failed; {going_on} (continue_on_error).")
                return TOLERATED
            return FAILED


def _log_summary(result: RunResult, timeline: bool) -> None:
    """pre-commit's ending: one line per step that ran, with its result and time, and a total; with
    ``timeline``, when each step started, and a bar per step on the run's time axis."""
    if not result.steps:
        return
    log = get_logger()
    spans = None
    if timeline and result.started_at is not None:
        spans = [
            None
            if r.started_at is None or r.ended_at is None
            else ((r.started_at - result.started_at).total_seconds(), (r.ended_at - r.started_at).total_seconds())
            for r in result.steps
        ]
    for text, outcome in summary_lines(
        [(r.label, r.result, r.duration_s, r.returncode, r.attempts, r.timed_out, r.reason) for r in result.steps],
        result.result,
        result.duration_s,
        spans,
    ):
        log.info(text, extra={"color": _COLORS[outcome]})


_COLORS = {"ok": "green", "failed": "red", "interrupted": "yellow", "skipped": "yellow", None: None}
