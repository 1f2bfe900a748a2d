"""Run a pipeline's steps in order; on a failure, ask an injected ``on_failure`` what to do."""

from __future__ import annotations

import enum
import os
import sys
from dataclasses import dataclass
from typing import Callable, Mapping

from lynx.config import Pipeline, Step
from lynx.logs import OutputRelay, get_logger
from lynx.process import StepGuard, run_step

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

    @property
    def description(self) -> str:
        code = self.returncode
        if code < 0:
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"{self.step.label} failed with exit code {code} (killed by {name})."
        return f"{self.step.label} failed with exit code {code}."


@dataclass(frozen=True)
class RunResult:
    """How one run of the pipeline ended: all steps done, a step failed, or interrupted."""

    failed: StepResult | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed is None and not self.interrupted


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
) -> RunResult:
    """Run every step in order with ``python``; a loop, so restarting never deepens the stack.

    Args:
        pipeline: what to run.
        on_failure: asked after each failed step.
        relay: where the steps' output goes.
        guard: lets another thread stop the run (the scheduler on Ctrl+C or SIGTERM).
        environ: the steps' environment (PYTHONUNBUFFERED=1 is added).
        inherit_stdin: the steps read Lynx's standard input (else an empty one).
        python: the interpreter that runs each script.
    """
    log = get_logger()
    env = {**environ, "PYTHONUNBUFFERED": "1"}
    index = 0
    while index < len(pipeline.steps):
        if guard.stopping:
            return RunResult(interrupted=True)
        step = pipeline.steps[index]
        log.info(f"Processing Step {step.number}: {step.script}...", extra={"color": "yellow"})
        log.info(OUTPUT_HEAD)
        try:
            returncode = run_step(
                [python, step.path, *step.arguments],
                relay.write,
                name=step.label,
                guard=guard,
                env=env,
                inherit_stdin=inherit_stdin,
            )
        finally:
            relay.flush()
            log.info(OUTPUT_FOOT)
        if guard.stopping:
            log.warning(f"{step.label} was interrupted.")
            return RunResult(interrupted=True)
        if returncode == 0:
            log.info(f"{step.label} completed successfully.", extra={"color": "green"})
            index += 1
            continue
        result = StepResult(step, returncode)
        log.error(result.description, extra={"color": "red"})
        decision = on_failure(result)
        if decision is Decision.RERUN_STEP:
            log.info("Restarting step...")
        elif decision is Decision.RESTART:
            log.info("Restarting pipeline...", extra={"color": "yellow"})
            index = 0
        else:
            return RunResult(failed=result)
    count = len(pipeline.steps)
    log.info(f"All {count} step{'s' if count != 1 else ''} completed successfully.", extra={"color": "green"})
    return RunResult()
