"""SLURM checked up front, alike for ``lynx start`` and ``lynx validate``: the client commands, the
controller, and whether SLURM would take each step's options (``srun --test-only``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Mapping

from lynx.errors import ConfigError
from lynx.jobs import COMMAND_TIMEOUT, ping_problem

if TYPE_CHECKING:
    from lynx.records import Pipeline, Step

COMMANDS = ("srun", "squeue", "scancel", "scontrol")


def check_cluster(
    pipeline: Pipeline, *, python: str = sys.executable, environ: Mapping[str, str] = os.environ
) -> dict[int, str]:
    """Raise ConfigError naming the step unless SLURM can take every SLURM step of ``pipeline``.

    The controller is asked once (``scontrol ping``) and each distinct set of options once
    (``srun --test-only``), all at the same time: the check costs about one srun.

    Returns:
        SLURM's answer for each SLURM step, by step number ("SLURM would accept it: Job 12 to
        start at ..."), for ``lynx validate`` to show.
    """
    from lynx.slurm import srun_command

    steps = [step for step in pipeline.steps if step.slurm is not None]
    if not steps:
        return {}
    first = steps[0]
    for command in COMMANDS:
        if not _on_path(command, environ.get("PATH", os.defpath)):
            raise ConfigError(
                f"{_where(pipeline, first)}: runs on SLURM, but {command} is not on PATH "
                "(install the SLURM client commands)"
            )
    # Steps with the same options (and the same SLURM_* variables, which srun reads too) get one question.
    asked: dict[tuple[Any, ...], tuple[Step, subprocess.Popen[str]]] = {}
    keys: dict[int, tuple[Any, ...]] = {}
    ping = _spawn(["scontrol", "ping"], environ)
    try:
        for step in steps:
            env = step.environment(environ)
            options: tuple[Any, ...] = (step.slurm, tuple(sorted(_slurm_variables(env))))
            keys[step.number] = options
            if options not in asked:
                srun = srun_command(step, pipeline=pipeline.name, python=python)
                # Without --quiet, srun says when and where the job would start.
                test = ["srun", "--test-only", *(word for word in srun[1:] if word != "--quiet")]
                asked[options] = (step, _spawn(test, env))
        deadline = time.monotonic() + COMMAND_TIMEOUT
        down = _controller_down(ping, deadline)
        if down is not None:
            raise ConfigError(f"{_where(pipeline, first)}: the SLURM controller does not answer ({down})")
        answers: dict[tuple[Any, ...], str] = {}
        for options, (step, popen) in sorted(asked.items(), key=lambda item: item[1][0].number):
            accepted, said = _answer(popen, deadline)
            if not accepted:
                raise ConfigError(f"{_where(pipeline, step)}: SLURM would refuse the job: {said} (srun --test-only)")
            answers[options] = f"SLURM would accept it: {said}"
    finally:
        for popen in [ping, *(popen for _, popen in asked.values())]:
            if popen.poll() is None:
                popen.kill()
                popen.communicate()
    return {number: answers[options] for number, options in keys.items()}


def _slurm_variables(env: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in env.items() if name.startswith(("SLURM_", "SRUN_"))]


def _where(pipeline: Pipeline, step: Step) -> str:
    return f"{pipeline.source}: step {step.number} ({step.title})"


def _spawn(command: list[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(env)
    )


def _controller_down(ping: subprocess.Popen[str], deadline: float) -> str | None:
    """Why the controller does not answer, from ``scontrol ping`` (quick either way), or None."""
    try:
        out, err = ping.communicate(timeout=max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out"
    return ping_problem(ping.returncode, out, err)


def _answer(popen: subprocess.Popen[str], deadline: float) -> tuple[bool, str]:
    """Whether ``srun --test-only`` accepted the job, with what it said (the reason it gave, when it did not)."""
    try:
        out, err = popen.communicate(timeout=max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        return False, f"srun --test-only did not answer within {COMMAND_TIMEOUT:g} s"
    lines = [line.strip() for line in (err + out).splitlines() if line.strip()]
    if popen.returncode == 0:
        return True, lines[-1].removeprefix("srun: ") if lines else "yes"
    # 'allocation failure: <SLURM's reason>' says most, unless it is 'No error' (srun's own check refused).
    for line in reversed(lines):
        if line.startswith("allocation failure: ") and not line.endswith("No error"):
            return False, line.removeprefix("allocation failure: ")
    for line in reversed(lines):
        if line.startswith("srun: error: "):
            return False, line.removeprefix("srun: error: ")
    return False, lines[-1] if lines else f"srun exit code {popen.returncode}"


def _on_path(command: str, path: str) -> bool:
    """``command`` is an executable in one of ``path``'s directories (shutil.which, without its import)."""
    return any(
        os.access(os.path.join(folder, command), os.X_OK) and os.path.isfile(os.path.join(folder, command))
        for folder in path.split(os.pathsep)
        if folder
    )
