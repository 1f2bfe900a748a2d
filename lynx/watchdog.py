"""Lynx's watchdog: a small process that ends the running step (and cancels its SLURM job) if Lynx dies.

Lynx ends its steps on Ctrl+C, SIGTERM, ``lynx stop`` and every error, but nothing can run in a
process killed with SIGKILL (the OOM killer, ``kill -9``, a hard logout). ``PR_SET_PDEATHSIG``
would reach only a step's own process, and it fires when the *thread* that started the step ends
(a scheduler's steps start in worker threads). So each Lynx run forks a watchdog once, before any
thread exists (no interpreter start), and forks again so that init adopts it: it is in no one's
tree, and nothing that walks Lynx's tree (``lynx stop``, a supervisor, a test) signals it.

The watchdog holds the read end of a pipe whose only writer is Lynx. Lynx writes one line when a
step's process starts (``S``: its PID, its start in clock ticks since boot, the SLURM job record it
serves if it is ``srun``, its label) and ends (``E``), and when a SLURM job is submitted (``J``:
its record in ``.lynx/jobs/``) and done (``D``). End of file means Lynx has exited. With nothing
registered (a normal exit) the watchdog exits at once; Lynx waits for that, so no watchdog outlives
a Lynx that exited. Otherwise Lynx died, and the watchdog does what Lynx would have done:

- a SLURM job gets SIGTERM through ``scancel``, then SIGKILL after the grace, and is cancelled; if
  the controller does not answer within the grace, its record says so, and the next ``lynx start``,
  ``lynx status`` or ``lynx stop`` here cancels it (see :mod:`lynx.jobs`);
- a step's tree (its process, its descendants, its process group and session) gets SIGTERM, then
  SIGKILL after the grace; ``srun`` only once its job has been dealt with.

It never signals a process that is not the step's: the step's PID counts only with the start time
Lynx read when it started it, and every other process through psutil, which checks that its PID
has not been reused. It has its own session (a terminal's signals never reach it), its standard
streams on /dev/null and no other file of Lynx's open; what it does after Lynx's death it appends
to Lynx's log file, if there is one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from lynx.process import process_start

# A label is cut to this many characters: a message must stay within one atomic pipe write.
LABEL_LIMIT = 200


class Watchdog:
    """Lynx's end of the pipe: tell the watchdog what runs, so that it can end it should Lynx die."""

    def __init__(self, commands: int, done: int) -> None:
        self._commands = commands
        self._done = done
        self._warned = False

    def step_started(self, pid: int, label: str, job_record: str | None = None) -> None:
        ticks = process_start(pid)
        if ticks is not None:  # without its start time the watchdog could not tell the step's PID from another's
            self._send(f"S {pid} {ticks} {job_record or '-'} {label[:LABEL_LIMIT]}")

    def step_ended(self, pid: int) -> None:
        self._send(f"E {pid}")

    def job_started(self, record: str) -> None:
        self._send(f"J {record}")

    def job_done(self, record: str) -> None:
        self._send(f"D {record}")

    def close(self, timeout: float = 2.0) -> None:
        """Lynx is exiting normally: the watchdog sees the end of the pipe and exits; wait until it has."""
        import select

        if self._commands < 0:
            return
        os.close(self._commands)
        self._commands = -1
        poller = select.poll()
        poller.register(self._done, select.POLLIN)
        poller.poll(int(timeout * 1000))  # its end of the 'done' pipe closes as it exits
        os.close(self._done)

    def _send(self, line: str) -> None:
        # One write of a short line: atomic, so lines from several threads never mix. Non-blocking: a
        # watchdog that stopped reading must never hold a step up.
        data = (line.replace("\n", "\\n").replace("\r", "\\r") + "\n").encode("utf-8", "replace")
        try:
            os.write(self._commands, data)
        except OSError as error:
            if not self._warned:
                self._warned = True
                from lynx.logs import get_logger

                get_logger().warning(
                    f"Lynx's watchdog cannot be told what runs ({error.strerror or error}): "
                    "should Lynx be killed, its step would not be ended."
                )


def start_watchdog(*, grace: float, log_file: str | None) -> Watchdog | None:
    """Fork the watchdog (Linux only: it needs ``/proc`` to tell processes apart); None where it cannot be.

    Call it from the main thread before any other thread exists (a fork copies only the calling
    thread, and a lock another thread held would stay locked in the copy), and before Lynx becomes
    a child subreaper (:func:`lynx.process.supervise_steps`), so that init, not Lynx, adopts it.
    """
    if not sys.platform.startswith("linux") or threading.active_count() > 1 or process_start(os.getpid()) is None:
        return None
    commands_read, commands_write = os.pipe()
    done_read, done_write = os.pipe()
    lynx = os.getpid()
    try:
        middle = os.fork()
    except OSError:
        for fd in (commands_read, commands_write, done_read, done_write):
            os.close(fd)
        return None
    if middle == 0:
        try:
            os.setsid()  # no terminal: Ctrl+C, Ctrl+Z and the terminal closing do not reach it
            if os.fork() == 0:
                _run(commands_read, done_write, lynx=lynx, grace=grace, log_file=log_file)
        finally:
            os._exit(0)  # never Lynx's own teardown (its buffers, its atexit handlers) in a copy
    os.close(commands_read)
    os.close(done_write)
    os.waitpid(middle, 0)  # gone at once, once it has forked the watchdog
    os.set_blocking(commands_write, False)
    return Watchdog(commands_write, done_read)


class _Step:
    """A step's process as Lynx described it (a plain class: the watchdog module loads with every run)."""

    def __init__(self, pid: int, ticks: int, job_record: str | None, label: str) -> None:
        self.pid = pid
        self.ticks = ticks
        self.job_record = job_record
        self.label = label


def _run(commands: int, done: int, *, lynx: int, grace: float, log_file: str | None) -> None:
    """The watchdog's life: read what Lynx says until the pipe ends; then, if Lynx died, end what ran."""
    import gc

    # Objects copied from Lynx (its open files among them) must never be collected here: that would
    # close file descriptors that are by now the watchdog's own.
    gc.disable()
    _detach(keep=(commands, done))
    _retitle(f"lynx-watchdog (Lynx PID {lynx})")
    steps: dict[int, _Step] = {}
    jobs: dict[str, None] = {}
    pending = b""
    while True:
        try:
            chunk = os.read(commands, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            _take(line.decode("utf-8", "replace"), steps, jobs)
    if steps or jobs:
        _after_death(steps, jobs, lynx=lynx, grace=grace, say=_log_writer(log_file))


def _detach(keep: tuple[int, ...]) -> None:
    """Let go of everything of Lynx's: standard streams on /dev/null, every other file closed, the
    signals Lynx handles back to their defaults (a terminal's ignored)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _retitle(title: str) -> None:
    """Name the watchdog in ps, psutil and /proc: it must not pass for a copy of Lynx (a forked
    process keeps the command line it was started with: here Lynx's, a scheduler's '--detached').

    The command line is the memory between ``arg_start`` and ``arg_end`` (/proc/self/stat): it is
    overwritten through /proc/self/mem, the title then a NUL (where /proc stops reading).
    """
    with contextlib.suppress(OSError), open("/proc/self/comm", "w", encoding="ascii") as comm:
        comm.write("lynx-watchdog")
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        # Fields 48 and 49; those after the command name start at field 3.
        start, end = int(fields[45]), int(fields[46])
        room = end - start
        if room < 2:
            return
        text = title.encode("ascii", "replace")[: room - 1] + b"\0"
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            memory.write(text + b" " * (room - len(text)))
    except (OSError, ValueError, IndexError):
        pass  # an older kernel: it keeps Lynx's command line, and 'lynx-watchdog' as its name


def _take(line: str, steps: dict[int, _Step], jobs: dict[str, None]) -> None:
    kind, _, rest = line.partition(" ")
    try:
        if kind == "S":
            pid, ticks, job_record, label = [*rest.split(" ", 3), ""][:4]
            steps[int(pid)] = _Step(int(pid), int(ticks), None if job_record == "-" else job_record, label)
        elif kind == "E":
            steps.pop(int(rest), None)
        elif kind == "J":
            jobs[rest] = None
        elif kind == "D":
            jobs.pop(rest, None)
    except ValueError:
        pass  # not a line Lynx writes


def _log_writer(log_file: str | None) -> Callable[[str, str], None]:
    """Append lines to Lynx's log file as Lynx writes them: one write each, never creating the file,
    never waiting on a FIFO nobody reads."""

    def say(level: str, message: str) -> None:
        if not log_file:
            return
        from lynx.logs import _line_prefix

        with contextlib.suppress(OSError):
            fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
            try:
                os.write(fd, (_line_prefix(time.time(), level) + message + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)

    return say


def _after_death(
    steps: dict[int, _Step], jobs: dict[str, None], *, lynx: int, grace: float, say: Callable[[str, str], None]
) -> None:
    """End what Lynx left running: its SLURM jobs and plain steps at once, each srun after its job."""
    import logging

    # As Lynx says why it ends a step: "Step 2 (train.py) outlived Lynx (PID 4242), which has died: ending it (...)".
    died = f"outlived Lynx (PID {lynx}), which has died"

    class ToLogFile(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            say(record.levelname, record.getMessage())

    # What the SLURM code logs goes to the log file too (Lynx's own handlers wrote to files now closed).
    logging.getLogger("lynx").handlers = [ToLogFile()]
    workers = []
    for record in jobs:
        worker = threading.Thread(target=_end_job, args=(record, died, grace), daemon=True)
        worker.start()
        workers.append(worker)
    plain = [step for step in steps.values() if step.job_record is None or step.job_record not in jobs]
    _end_trees(plain, died, grace, say)
    for worker in workers:
        worker.join()
    _end_trees([step for step in steps.values() if step not in plain], died, grace, say)


def _end_job(record: str, reason: str, grace: float) -> None:
    from lynx.slurm import end_left_job

    with contextlib.suppress(Exception):
        end_left_job(record, reason=reason, grace=grace)


def _end_trees(steps: list[_Step], died: str, grace: float, say: Callable[[str, str], None]) -> None:
    """SIGTERM to each step's tree, then SIGKILL to what is left of it after ``grace`` seconds, each said."""
    if not steps:
        return
    import psutil

    leaders = {step.pid: _leader(step, psutil) for step in steps}
    members = {step.pid: _members(step, leaders[step.pid], [], psutil) for step in steps}
    # A step with nothing left running (srun, once its job has ended) needs nothing.
    steps = [step for step in steps if members[step.pid]]
    for step in steps:
        others = [each for each in members[step.pid] if each.pid != step.pid]
        leader = len(others) < len(members[step.pid])
        whom = (
            f"PID {step.pid} and {len(others)} more process(es)" if leader else f"{len(others)} process(es) it started"
        )
        say("WARNING", f"{step.label} {died}: ending it (SIGTERM to {whom}).")
    _signal(members, signal.SIGTERM)
    _signal(members, signal.SIGCONT)  # a step suspended with Ctrl+Z could not act on SIGTERM
    deadline = time.monotonic() + grace
    while any(members.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        for step in steps:
            found = _members(step, leaders[step.pid], members[step.pid], psutil)
            # Found only now (started while being ended): SIGTERM too, and SIGKILL with the rest.
            _signal({step.pid: [each for each in found if each not in members[step.pid]]}, signal.SIGTERM)
            members[step.pid] = found
    for step in steps:
        if members[step.pid]:
            say("WARNING", f"{step.label} did not exit within {grace:g} s of SIGTERM: killing it (SIGKILL).")
        else:
            say("INFO", f"{step.label} has ended.")
    _signal(members, signal.SIGKILL)
    psutil.wait_procs([each for found in members.values() for each in found], timeout=2)


def _leader(step: _Step, psutil: Any) -> Any:
    """The step's own process, if it is still the one Lynx started (its start time matches)."""
    try:
        process = psutil.Process(step.pid)
    except psutil.Error:
        return None
    # After psutil.Process(): psutil checks from now on that the PID is not reused before each signal.
    return process if process_start(step.pid) == step.ticks else None


def _members(step: _Step, leader: Any, known: list[Any], psutil: Any) -> list[Any]:
    """The step's processes still running: while its own process is there (even as a zombie, its PID
    is the group's and the session's ID), it, its descendants and its group and session; after
    that, those known and their descendants."""
    found: dict[int, Any] = {}
    for each in known:
        with contextlib.suppress(psutil.Error):
            if _running(each, psutil):
                found[each.pid] = each
                found.update((child.pid, child) for child in each.children(recursive=True))
    if leader is not None and leader.is_running():
        with contextlib.suppress(psutil.Error):
            found[leader.pid] = leader
            found.update((child.pid, child) for child in leader.children(recursive=True))
            for process in psutil.process_iter():
                with contextlib.suppress(OSError, psutil.Error):
                    if process.pid not in found and step.pid in (os.getpgid(process.pid), os.getsid(process.pid)):
                        found[process.pid] = process
    # A zombie has ended: it only waits to be reaped (by init, once its parent Lynx is gone).
    return [each for each in found.values() if each.pid != os.getpid() and _running(each, psutil)]


def _running(process: Any, psutil: Any) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _signal(members: dict[int, list[Any]], signum: int) -> None:
    import psutil

    for found in members.values():
        for process in found:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signum)
