"""Where a step runs: here as a process group, or as a SLURM job when it has a ``slurm:`` key.

The one place that tells the two apart; the runner calls :func:`launch` for every step.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Mapping

from lynx.children import reap_orphans
from lynx.process import StepExit, StepGuard, run_step
from lynx.records import Pipeline, Step


def launch(
    step: Step,
    on_output: Callable[[bytes], None],
    *,
    pipeline: str,
    guard: StepGuard,
    python: str = sys.executable,
    environ: Mapping[str, str] = os.environ,
    inherit_stdin: bool = True,
) -> StepExit:
    """Run ``step`` to its end where it belongs, passing its output to ``on_output`` chunk by chunk.

    Args:
        step: what to run.
        on_output: gets the step's merged stdout/stderr.
        pipeline: the pipeline's name (SLURM's job name is lynx:<pipeline>:<step>).
        guard: ends the step on request.
        python: the interpreter for .py scripts.
        environ: the base of the step's environment.
        inherit_stdin: a local step reads Lynx's standard input (a SLURM job never reads input).
    """
    try:
        if step.slurm is not None:
            from lynx.slurm import run_job

            return run_job(step, on_output, pipeline=pipeline, guard=guard, python=python, environ=environ)
        return run_step(
            step.argv(python),
            on_output,
            name=step.label,
            guard=guard,
            env=step.environment(environ),
            cwd=step.cwd,
            inherit_stdin=inherit_stdin,
            timeout=step.timeout,
        )
    finally:
        if guard.subreaper:
            # What has exited and is not one of Lynx's own children (lynx.children.spawn) is an orphan
            # a step left (or srun's helpers), re-parented to Lynx.
            reap_orphans()


def check_launchers(
    pipeline: Pipeline, *, python: str = sys.executable, environ: Mapping[str, str] = os.environ
) -> dict[int, str]:
    """Before anything runs (``lynx start`` and ``lynx validate`` alike): raise ConfigError, naming
    the step, if SLURM cannot take a SLURM step's job.

    Returns:
        What SLURM said of each SLURM step, by step number (none for a config without them).
    """
    if all(step.slurm is None for step in pipeline.steps):
        return {}
    from lynx.slurm_check import check_cluster

    return check_cluster(pipeline, python=python, environ=environ)
