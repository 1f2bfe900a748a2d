"""One SLURM job as Lynx watches and ends it: found in squeue by its name and a comment no other job
has, ended as a local step is ended (``scancel --signal``: what Lynx received, then SIGTERM, then
SIGKILL to its steps; then cancelled), waited for until SLURM says it has ended, and recorded in
``.lynx/jobs/`` (:mod:`lynx.jobs`) until then.

When the controller does not answer, ``squeue`` and ``scancel`` would each try for 9 s: a command
still waiting after a second asks ``scontrol ping`` (instant either way) and is given up on if the
controller is down. Ending a job then waits for the controller: after Ctrl+C until it answers or a
second Ctrl+C, else for the grace; then Lynx gives up, says which job may still run and how to
cancel it, and leaves its record for the next ``lynx start``, ``status`` or ``stop`` here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Mapping

from lynx.children import released, spawn
from lynx.ending import signals_deferred
from lynx.jobs import (
    ACTIVE_STATES,
    COMMAND_TIMEOUT,
    JobRecord,
    JobRegistry,
    cancelled_later,
    controller_down,
    now_stamp,
)
from lynx.logs import get_logger
from lynx.process import StepGuard

# How long to wait for a cancelled job to end (SIGTERM, then SIGKILL after the guard's grace).
CANCEL_WAIT = 60.0
# A SLURM command still waiting after this long may be waiting for a controller that does not answer.
SLOW_COMMAND = 1.0
# How long Lynx's watchdog waits for another Lynx that is at the job's record already.
LOCK_WAIT = 30.0

log = get_logger()


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    node: str | None
    reason: str


def end_left_job(path: str, *, reason: str, grace: float) -> None:
    """End the job of record ``path`` as Lynx would have (its tasks get SIGTERM, then SIGKILL after
    ``grace``), for Lynx's watchdog once Lynx has died; when the controller does not answer within
    ``grace``, the record says so, for the next 'lynx' command here to cancel it."""
    from lynx.jobs import read_record, records_locked, slurm_env

    # A record is <directory>/.lynx/jobs/<name>.json.
    directory = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    with records_locked(directory, wait=LOCK_WAIT) as locked:
        try:
            record = read_record(path)
        except (OSError, ValueError):
            return  # ended, and forgotten
        if not locked or record.abandoned_at is not None:
            return  # another Lynx is at it; or Lynx gave up on it itself, and said so
        registry = JobRegistry(scheduler=record.scheduler, warn=log.warning)
        job = SlurmJob(record.step, record.job_name, slurm_env(record, os.environ), registry=registry, record=record)
        job.cancelled = True
        job.patience = grace
        try:
            found = job.find_answered()
            if found is not None and found.state in ACTIVE_STATES:
                job.end(found, reason, signal.SIGTERM, grace)
            else:
                job.ended = True
        except GaveUpError as gave_up:
            job.abandon(reason, str(gave_up))
        job.close(None)


class GaveUpError(Exception):
    """Lynx stops waiting for a SLURM controller that does not answer (a second Ctrl+C, or its patience ran out)."""


class SlurmJob:
    """One submission, found in squeue by its name and a comment no other job has, and recorded in
    ``.lynx/jobs/`` until SLURM says it has ended."""

    def __init__(
        self,
        label: str,
        name: str,
        env: Mapping[str, str],
        *,
        registry: JobRegistry | None = None,
        pipeline: str = "",
        record: JobRecord | None = None,
    ) -> None:
        self.label = label
        self.name = name
        self.env = dict(env)
        self.tag = record.tag if record is not None else f"lynx {os.getpid()} {os.urandom(6).hex()}"
        self.last: JobState | None = None
        self.job_id = record.job_id if record is not None else None
        self.said_queued = False
        self.started = False
        # cancel() may be called from two threads (the main one on Ctrl+C, the step's on its
        # timeout); the job is ended once, and the second caller waits for that.
        self.cancelling = threading.Lock()
        self.cancelled = False
        # SLURM has said that the job has ended (or it was never queued).
        self.ended = False
        self.registry = registry
        if record is None and registry is not None:
            record = registry.submitted(job_name=name, tag=self.tag, pipeline=pipeline, step=label, env=self.env)
        self.record = record
        # While ending the job: how long to wait for a controller that does not answer (None: until
        # a second Ctrl+C), since when it has not, whether a second signal came, and whether Lynx gave up.
        self.patience: float | None = None
        self.unanswered_since: float | None = None
        self.interrupted_again = False
        self.abandoned = False

    def find(self) -> JobState | None:
        """The job as squeue sees it now (also just after it ended); None when squeue does not list it,
        UNANSWERED when squeue does not answer."""
        if self.abandoned or (self.unanswered_since is not None and controller_down(self.env) is not None):
            return UNANSWERED  # known not to answer: a quick scontrol ping instead of squeue's long wait
        fields = ["-j", self.job_id] if self.job_id is not None else ["-n", self.name]
        refusal: list[str] = []
        listing = self._run("squeue", "-h", "-t", "all", *fields, "-o", "%A|%T|%N|%r|%k", refusal=refusal)
        if listing is None:
            # A job that ended a while ago (MinJobAge) is no longer known: squeue -j refuses its id.
            if refusal and "Invalid job id" in refusal[0]:
                self.ended = True
                return None
            return UNANSWERED
        for line in listing.splitlines():
            job_id, state, node, reason, comment = (line.split("|", 4) + [""] * 5)[:5]
            if comment == self.tag:
                self.last = JobState(job_id, state, node or None, reason)
                self.ended = state not in ACTIVE_STATES
                if self.job_id is None:
                    self.job_id = job_id
                    if self.registry is not None and self.record is not None:
                        self.record = self.registry.update(self.record, job_id=job_id)
                return self.last
        return None

    def look(self) -> None:
        """Say once that the job waits in the queue, and once where it started."""
        found = self.find()
        if found is None or found is UNANSWERED:
            return
        if found.state == "PENDING" and not self.said_queued:
            self.said_queued = True
            log.info(f"{self.label} queued as SLURM job {found.job_id} ({found.reason})…")
        elif found.state != "PENDING":
            self.started = True
            if found.state in ("RUNNING", "COMPLETING", "COMPLETED"):
                on = f" on {found.node}" if found.node else ""
                verb = "started" if self.said_queued else "runs"
                log.info(f"{self.label} {verb} as SLURM job {found.job_id}{on}.")

    def final(self, settle: float = 0.0) -> JobState | None:
        """The job's state once srun has returned (waiting up to ``settle`` s for it to leave the active
        states; UNANSWERED if squeue does not answer); says where it ran if that was never said."""
        was_started = self.started
        _, found = self._settle(settle)
        if found not in (None, UNANSWERED) and not was_started and found.node:
            log.info(f"{self.label} ran as SLURM job {found.job_id} on {found.node}.")
        return found

    def cancel(
        self,
        reason: str,
        worker: threading.Thread,
        inner: StepGuard,
        first: int = signal.SIGTERM,
        stopping: bool = False,
    ) -> None:
        """End the job, wait until SLURM says it has ended, then make sure srun has exited.

        When the controller does not answer, Lynx waits for it: after Ctrl+C until it answers or a
        second Ctrl+C, else (SIGTERM, ``lynx stop``, a timeout) for the step's grace. Then it gives up:
        it ends srun at once and says which job may still run (it stays recorded, for the next 'lynx'
        command here to cancel).

        Args:
            stopping: Lynx itself is being interrupted (else a Ctrl+C meanwhile is raised afterwards).
        """
        # Signals held first: a second Ctrl+C must not break the wait for the other thread's cancel.
        with signals_deferred(reraise=not stopping, on_arrival=self._signalled), self.cancelling:
            if self.cancelled:
                return
            self.cancelled = True
            self.patience = None if stopping and first == signal.SIGINT else inner.grace
            self.unanswered_since = None  # the patience counts from now, not from an earlier look
            try:
                found = self.find_answered()
                if found is None:
                    # Not submitted yet (or srun is still asking for it): ending srun withdraws the request.
                    log.warning(f"{self.label} {reason}: ending srun before SLURM has queued the job.")
                    inner.stop(reason)
                    worker.join()
                    found = self.find_answered()
                if found is not None and found.state in ACTIVE_STATES:
                    self.end(found, reason, first, inner.grace)
                elif found is None:
                    self.ended = True  # never queued
            except GaveUpError as gave_up:
                self.abandon(reason, str(gave_up))
                # srun can do nothing for its job without the controller: it goes at once.
                inner.stop(reason, signal.SIGKILL)
                worker.join()
                return
            worker.join(COMMAND_TIMEOUT)
            if worker.is_alive():
                inner.stop(reason)
                worker.join()

    def end(self, found: JobState, reason: str, first: int, grace: float) -> None:
        """As a local step is ended: a running job's tasks get ``first`` (what Lynx received), then
        SIGTERM, then SIGKILL, ``grace`` seconds apart, while the job still runs (signals only: a
        job that scancel has cancelled takes no more signals); then the job is cancelled (a
        pending one at once), and waited for until SLURM says it has ended."""
        job_id = found.job_id
        if found.state == "RUNNING":
            signals = [first] if first == signal.SIGTERM else [first, signal.SIGTERM]
            for index, signum in enumerate(signals):
                name = signal.Signals(signum).name
                if index:
                    previous = signal.Signals(signals[index - 1]).name
                    log.warning(f"SLURM job {job_id} still runs {grace:g} s after {previous}: sending {name}.")
                else:
                    log.warning(f"{self.label} {reason}: sending {name} to SLURM job {job_id} (scancel).")
                self._scancel(f"--signal={name[3:]}", job_id)
                if self._tasks_end(job_id, grace):
                    break
            else:
                log.warning(f"SLURM job {job_id} still runs {grace:g} s after SIGTERM: killing it (SIGKILL).")
                # SIGKILL to the job itself would be a plain cancel, with SLURM's own KillWait; to its steps it is not.
                for step_id in self._steps(job_id) or [f"{job_id}.0"]:
                    self._scancel("--signal=KILL", step_id)
        else:
            log.warning(f"{self.label} {reason}: cancelling SLURM job {job_id} (scancel).")
        self._scancel(job_id, quiet=True)
        if self._settle(CANCEL_WAIT)[0]:
            log.info(f"SLURM job {job_id} has ended.")
        else:
            log.error(f"SLURM job {job_id} has not ended within {CANCEL_WAIT:g} s of scancel.")

    def find_answered(self) -> JobState | None:
        """:meth:`find`, waiting for the controller while it does not answer (see :meth:`_await_controller`)."""
        while True:
            found = self.find()
            if found is not UNANSWERED or self.abandoned:
                return found
            self._await_controller()

    def abandon(self, reason: str, why: str) -> None:
        """Lynx stops trying to end the job: say which job may still run and how to cancel it, and
        leave its record for the next 'lynx' command here."""
        self.abandoned = True
        record = self.record
        what = record.what if record is not None else f"SLURM job {self.job_id or '?'}"
        hint = record.cancel_hint if record is not None else f"cancel it with 'scancel {self.job_id}'"
        log.error(
            f"{self.label} {reason}: gave up waiting for the SLURM controller ({why}): {what} may still be "
            f"running. {cancelled_later(hint)}"
        )
        if self.registry is not None and record is not None:
            self.record = self.registry.update(record, abandoned_at=now_stamp(), why=f"{reason}: {why}")

    def close(self, srun_exit: int | None) -> None:
        """Forget the job's record once SLURM has said it ended, or srun returned by itself (which it
        does only after telling the controller); else leave it, for the next 'lynx' command here."""
        if self.registry is None or self.record is None or self.abandoned:
            return
        if self.ended or (srun_exit is not None and srun_exit >= 0):
            self.registry.forget(self.record)
            return
        why = "SLURM did not say that it ended"
        self.record = self.registry.update(self.record, abandoned_at=now_stamp(), why=why)
        log.warning(f"{self.record.what} may still be running ({why}). {cancelled_later(self.record.cancel_hint)}")

    def _signalled(self, signum: int) -> None:
        """A signal arrived while the job is ended: the first one started the ending, so this is a second."""
        if signum != signal.SIGTSTP:
            self.interrupted_again = True

    def _should_give_up(self) -> bool:
        if self.unanswered_since is None:
            return False
        if self.interrupted_again:
            return True
        return self.patience is not None and time.monotonic() - self.unanswered_since >= self.patience

    def _await_controller(self) -> None:
        """Return once the controller answers (``scontrol ping``, twice a second); raise GaveUpError on a
        second Ctrl+C, or once the patience has run out."""
        if self.unanswered_since is None:
            self.unanswered_since = time.monotonic()
        said = False
        while True:
            down = controller_down(self.env)
            if down is None:
                self.unanswered_since = None
                if said:
                    log.info("The SLURM controller answers again.")
                return
            if self._should_give_up():
                if self.interrupted_again:
                    raise GaveUpError("interrupted again")
                raise GaveUpError(f"it did not answer within {self.patience:g} s")
            if not said:
                said = True
                which = f"SLURM job {self.job_id}" if self.job_id else f"the SLURM job named '{self.name}'"
                how = (
                    "press Ctrl+C again to stop waiting and leave the job running"
                    if self.patience is None
                    else f"for at most {max(self.patience - (time.monotonic() - self.unanswered_since), 0):.0f} s"
                )
                log.warning(f"The SLURM controller does not answer ({down}): waiting for it to end {which} ({how}).")
            time.sleep(0.25)

    def _steps(self, job_id: str) -> list[str] | None:
        """The job's steps (``1234.0``, …) that still run; None when squeue does not answer."""
        listing = self._run("squeue", "-h", "-s", "-j", job_id, "-o", "%i")
        return listing.split() if listing is not None else None

    def _tasks_end(self, job_id: str, seconds: float) -> bool:
        """Wait up to ``seconds`` until the job has ended, or runs no step any more (its srun is gone,
        and with it the tasks: only the allocation is left, for scancel)."""
        deadline = time.monotonic() + seconds
        while True:
            found = self.find_answered()
            if found is None or found.state not in ACTIVE_STATES:
                return True
            if found.state == "RUNNING" and self._steps(job_id) == []:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _scancel(self, *arguments: str, quiet: bool = False) -> None:
        """Run scancel; say it when SLURM refuses (unless ``quiet``: the job may have ended already).
        While the controller does not answer, wait for it (see :meth:`_await_controller`)."""
        while True:
            refusal: list[str] = []
            if self._run("scancel", *arguments, refusal=refusal) is not None:
                return
            if self.unanswered_since is None:
                if refusal and not quiet:
                    log.warning(f"scancel {' '.join(arguments)}: {refusal[0]}")
                return
            self._await_controller()

    def _settle(self, seconds: float) -> tuple[bool, JobState | None]:
        """Wait up to ``seconds`` until SLURM says the job has ended (or no longer lists it): whether
        it has, and its last state (UNANSWERED: squeue did not answer). squeue not answering is not an
        end; while the job is being ended, Lynx waits for the controller."""
        look = self.find_answered if self.cancelled else self.find
        deadline = time.monotonic() + seconds
        found = look()
        while found is UNANSWERED or (found is not None and found.state in ACTIVE_STATES):
            if self.abandoned or time.monotonic() >= deadline:
                return False, found
            time.sleep(0.1)
            found = look()
        return True, found

    def _run(self, *command: str, refusal: list[str] | None = None) -> str | None:
        """A SLURM command's output; None when it fails (its message then in ``refusal``).

        A command that fails to reach the controller marks it as not answering. One still waiting
        after a second is given up on (killed) when ``scontrol ping`` says the controller is down
        (squeue and scancel would try for 9 s), or when Lynx gives up waiting for it.
        """
        said: list[str] = refusal if refusal is not None else []
        if self.abandoned:
            said.append("Lynx gave up on the job")
            return None
        try:
            popen = spawn(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=self.env,
            )  # fmt: skip
        except OSError as error:
            said.append(str(error))
            return None
        began = pinged = time.monotonic()
        try:
            while True:
                try:
                    out, err = popen.communicate(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    gone = now - pinged >= SLOW_COMMAND and controller_down(self.env) is not None
                    if gone:
                        self.unanswered_since = self.unanswered_since or began
                    elif now - pinged >= SLOW_COMMAND:
                        pinged = now
                    if gone or now - began >= COMMAND_TIMEOUT or self._should_give_up():
                        popen.kill()
                        popen.communicate()
                        said.append(f"{command[0]}: the SLURM controller does not answer")
                        return None
        except BaseException:
            popen.kill()
            popen.wait()
            raise
        finally:
            if popen.returncode is not None:
                released(popen)
        if popen.returncode != 0:
            message = " ".join(err.split()) or f"exit code {popen.returncode}"
            if "Unable to contact slurm controller" in message:
                self.unanswered_since = self.unanswered_since or began
            said.append(message)
            return None
        self.unanswered_since = None
        return out


# What find() says when squeue does not answer: the job may be in any state.
UNANSWERED = JobState("", "UNANSWERED", None, "")
