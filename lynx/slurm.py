"""Run a step as a SLURM job through ``srun``: its output streams back live, its exit code is the step's.

``srun`` itself runs under :func:`lynx.process.run_step` in a worker thread, so its output takes
the same path as a local step's. This thread watches the job beside it: it says when the job is
queued and when it starts, and when Lynx must end the step (Ctrl+C, SIGTERM, ``lynx stop``, a
``timeout``) it ends the job as a local step is ended (:class:`lynx.slurm_job.SlurmJob`: what Lynx
received, then SIGTERM, then SIGKILL; cancelled; waited for until SLURM says it has ended, also
through a controller that does not answer). ``srun`` is only signalled if it outlives its job.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from lynx.ending import describe_interruption, forwarded_signal
from lynx.jobs import ACTIVE_STATES, JobRegistry, cancel_left_jobs
from lynx.logs import get_logger
from lynx.process import StepExit, StepGuard, run_step
from lynx.slurm_job import UNANSWERED, SlurmJob

if TYPE_CHECKING:
    from lynx.records import Step

# Why a job ended when Lynx did not end it, for a failed step's message.
END_REASONS = {
    "CANCELLED": "was cancelled outside Lynx (scancel or an administrator)",
    "TIMEOUT": "was killed by SLURM at its time limit",
    "PREEMPTED": "was preempted",
    "NODE_FAIL": "was ended by the failure of its node",
    "BOOT_FAIL": "was ended because its node failed to boot",
    "DEADLINE": "was ended at its deadline",
    "OUT_OF_MEMORY": "ran out of memory",
}
# Seconds between looks at a job that has not started yet: quick at first, then sparing.
FIRST_POLL = 0.1
LONGEST_POLL = 5.0
TAIL_BYTES = 4096
SETTLE_WAIT = 5.0
_TASK_ERROR = re.compile(r"srun: error: \S+: tasks? [0-9,-]+: ")

log = get_logger()


def srun_command(step: Step, *, pipeline: str, python: str = sys.executable) -> list[str]:
    """The ``srun`` command line that runs ``step`` as a job (without Lynx's private ``--comment``)."""
    assert step.slurm is not None
    argv = list(step.argv(python))
    # The job starts in --chdir, so a script path relative to Lynx's directory must be made absolute.
    script = 1 if step.path.endswith(".py") else 0
    argv[script] = os.path.abspath(argv[script])
    command = [
        "srun",
        f"--job-name={job_name(step, pipeline)}",
        f"--chdir={step.cwd or os.getcwd()}",
        "--export=ALL",
        "--input=none",
        "--quiet",
    ]
    for option, value in step.slurm:
        command.append(f"--{option}" if value is True else f"--{option}={value}")
    return command + argv


def job_name(step: Step, pipeline: str) -> str:
    """lynx:<pipeline>:<step>, the name squeue shows (without commas: squeue -n splits on them)."""
    return f"lynx:{pipeline}:{step.title}".replace(",", "_")


def run_job(
    step: Step,
    on_output: Callable[[bytes], None],
    *,
    pipeline: str,
    guard: StepGuard,
    python: str = sys.executable,
    environ: Mapping[str, str] = os.environ,
) -> StepExit:
    """Run ``step`` as a SLURM job to its end; the same contract as :func:`lynx.process.run_step`.

    Returns:
        How the job ended, with its job id and node.
    """
    env = step.environment(environ)
    command = srun_command(step, pipeline=pipeline, python=python)
    # A scheduler that runs for weeks tidies up before each job, not only at the next 'lynx' command.
    for left in cancel_left_jobs(environ=environ, on_error=log.warning):
        (log.info if left.outcome != "unanswered" else log.warning)(left.message)
    registry = JobRegistry(scheduler=guard.scheduler, warn=log.warning)
    job = SlurmJob(step.label, job_name(step, pipeline), env, registry=registry, pipeline=pipeline)
    command.insert(1, f"--comment={job.tag}")
    tail = _Tail(on_output)
    inner = StepGuard(guard.grace, watchdog=guard.watchdog, job_record=job.record.path if job.record else None)
    outcome: dict[str, Any] = {}

    def relay() -> None:
        try:
            outcome["exit"] = run_step(command, tail.write, name=step.label, guard=inner, env=env, inherit_stdin=False)
        except BaseException as error:  # handed to the calling thread
            outcome["error"] = error

    worker = threading.Thread(target=relay, name="lynx-srun", daemon=True)
    deadline = None if step.timeout is None else time.monotonic() + step.timeout
    ended_by: str | None = None
    if guard.watchdog is not None and job.record is not None and job.record.path is not None:
        guard.watchdog.job_started(job.record.path)
    srun_exit: int | None = None
    worker.start()
    # Lynx's stop (Ctrl+C or SIGTERM while a schedule waits in the main thread) ends the job from there.
    token = guard.started_elsewhere(
        lambda reason, signum: job.cancel(reason, worker, inner, first=signum, stopping=True)
    )
    try:
        poll = FIRST_POLL
        next_look = time.monotonic() + poll
        while True:
            # Short waits: Lynx notices a stop request or the timeout within 0.1 s.
            worker.join(0.1)
            if not worker.is_alive():
                break
            now = time.monotonic()
            if ended_by is None and guard.stopping:
                ended_by = "Lynx is stopping"
                job.cancel(ended_by, worker, inner, first=guard.stop_signal, stopping=True)
            elif ended_by is None and deadline is not None and now >= deadline:
                ended_by = f"timed out after {step.timeout:g} s"
                job.cancel(ended_by, worker, inner)
            elif not job.started and now >= next_look:
                job.look()
                poll = min(poll * 2, LONGEST_POLL)
                next_look = now + poll
        if "error" in outcome:  # a bug in the relay: still, no job is left behind
            job.cancel("failed", worker, inner)
            raise outcome["error"]
        ended: StepExit = outcome["exit"]
        srun_exit = ended.returncode
        # A failed job's end state (CANCELLED, TIMEOUT, ...) may reach squeue just after srun has returned.
        final = job.final(settle=SETTLE_WAIT if ended_by is None and ended.returncode != 0 else 0.0)
        if ended_by is None and (
            (final is UNANSWERED and ended.returncode < 0)
            or (final not in (None, UNANSWERED) and final.state in ACTIVE_STATES - {"COMPLETING"})
        ):
            # srun ended by itself (killed, say) while its job goes on: the job must not outlive the step.
            job.cancel(f"lost its srun (exit code {ended.returncode})", worker, inner)
        if final is UNANSWERED:
            final = None
    except BaseException as error:
        job.cancel(describe_interruption(error), worker, inner, first=forwarded_signal(error), stopping=True)
        raise
    finally:
        guard.finished_elsewhere(token)
        job.close(srun_exit)
        if guard.watchdog is not None and job.record is not None and job.record.path is not None:
            guard.watchdog.job_done(job.record.path)
    timed_out = ended_by is not None and ended_by.startswith("timed out")
    launch_error = ended.launch_error
    if ended_by is None and ended.returncode != 0 and launch_error is None:
        if final is None:
            launch_error = tail.slurm_error()
        elif final.state in END_REASONS:
            log.error(f"{step.label}: SLURM job {final.job_id} {END_REASONS[final.state]} ({final.state}).")
    where = final or job.last
    return StepExit(
        ended.returncode,
        timed_out=timed_out,
        launch_error=launch_error,
        job_id=where.job_id if where else None,
        node=where.node if where else None,
    )


class _Tail:
    """Pass output on, keeping its last few KiB: SLURM's reason when it refuses a job."""

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self.on_output = on_output
        self.data = b""

    def write(self, chunk: bytes) -> None:
        self.on_output(chunk)
        self.data = (self.data + chunk[-TAIL_BYTES:])[-TAIL_BYTES:]

    def slurm_error(self) -> str | None:
        """SLURM's last error message in the output, e.g. 'Invalid partition name specified'."""
        # "srun: error: NODE: task 0: Exited with exit code 3" is about a job that ran, not a refusal.
        lines = [
            line
            for line in self.data.decode(errors="replace").splitlines()
            if line.startswith("srun: error: ") and not _TASK_ERROR.match(line)
        ]
        if not lines:
            return None
        message = lines[-1][len("srun: error: ") :]
        message = message.split("Unable to allocate resources: ", 1)[-1]
        return f"SLURM refused the job: {message}"
