"""Start a step, stream its output, and end it (and everything it started) when asked."""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from lynx.children import become_subreaper, released, spawn
from lynx.ending import (
    TERMINATE_GRACE,
    describe_interruption,
    end_process_tree,
    forwarded_signal,
    open_pidfd,
    poll_ms,
    signal_all,
    step_processes,
)

CHUNK_SIZE = 256 * 1024
PIPE_SIZE = 1024 * 1024
# Without a pidfd (not Linux), how often a silent step is checked for having exited while
# something it started in the background still holds its output pipe open.
EXIT_CHECK = 0.2
# While output keeps flowing, how often to look whether the step has exited or run out of time.
FLOWING_CHECK = 0.05
# Leftovers' output without a newline is passed on in pieces of this size.
LEFTOVER_LINE = 64 * 1024


log = logging.getLogger("lynx")


class StepWatch(Protocol):
    """Told which step's process runs, and which SLURM job, to end them should Lynx itself be
    killed (the watchdog of :mod:`lynx.watchdog`)."""

    def step_started(self, pid: int, label: str, job_record: str | None = None, pidfd: int | None = None) -> None: ...

    def step_ended(self, pid: int) -> None: ...

    def job_started(self, record: str) -> None: ...

    def job_done(self, record: str) -> None: ...


@dataclass(frozen=True)
class StepExit:
    """How a step's process ended."""

    # The exit code; negative: killed by that signal.
    returncode: int
    # Ended by Lynx because it ran longer than its timeout.
    timed_out: bool = False
    # Why the step could not be started at all (then returncode is 127 or 126), else None.
    launch_error: str | None = None
    # The SLURM job that ran the step and its node (lynx.slurm); None for a local step.
    job_id: str | None = None
    node: str | None = None


class StepGuard:
    """Lets any thread end (or suspend) the step that is running now, and keeps new steps from starting.

    It lives as long as Lynx runs, so it also keeps relaying the output of whatever a finished
    step left running (a server it started in the background): those processes are left alone,
    and a pipe nobody reads would kill them with SIGPIPE on their next write.
    """

    def __init__(
        self,
        grace: float = TERMINATE_GRACE,
        leftover_output: Callable[[bytes], None] | None = None,
        *,
        watchdog: StepWatch | None = None,
        scheduler: str | None = None,
        job_record: str | None = None,
    ) -> None:
        """Args:
        grace: seconds a step gets after each signal before the next one.
        leftover_output: where leftovers' output goes, whole lines at a time (default: the
            ``on_output`` of the step that left them).
        watchdog: told which step runs, to end it should Lynx itself be killed (lynx.watchdog;
            started before :func:`supervise_steps`).
        scheduler: the background scheduler's name, for records that outlive Lynx (lynx.jobs).
        job_record: the SLURM job record the steps started here serve (they are its srun): should
            Lynx die, the watchdog ends the job first.
        """
        self.grace = grace
        self.leftover_output = leftover_output
        self.watchdog = watchdog
        self.scheduler = scheduler
        self.job_record = job_record
        # Set by supervise_steps() once Lynx is a child subreaper (Linux).
        self.subreaper = False
        # Reentrant: the Ctrl+Z handler runs in the main thread, which may be inside a `with`.
        self._lock = threading.RLock()
        # The steps running now (several when steps run side by side), by PID: each with its name and
        # the guard's paused seconds when it started.
        self._running: dict[int, tuple[subprocess.Popen[bytes], str, float]] = {}
        # How to end steps that do not run here (SLURM jobs): each called with the reason and signal.
        self._enders: dict[int, Callable[[str, int], None]] = {}
        self._stopping = threading.Event()
        # Held by stop() while it ends a local step: the step's own thread then leaves reaping it
        # to stop(), which keeps the step's process group pinned until its whole tree is ended.
        self._ending = threading.Lock()
        # What stop() forwards first: what Lynx received (SIGINT for Ctrl+C).
        self.stop_signal: int = signal.SIGTERM
        self._suspended: tuple[dict[int, list[Any]], float] | None = None
        self._paused = 0.0
        self._leftovers: _Leftovers | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, reason: str, signum: int = signal.SIGTERM) -> None:
        """End the running step, if any, ``signum`` first; no step starts after this."""
        self.stop_signal = signum
        with self._ending:
            self._stopping.set()
            with self._lock:
                running = list(self._running.values())
                enders = list(self._enders.values())
            # Side by side steps are ended side by side: each gets its grace at the same time.
            endings = [
                functools.partial(
                    end_process_tree, popen, name, reason, self.grace, first=signum,
                    orphans=self.subreaper and len(running) + len(enders) == 1, stopping=True,
                )
                for popen, name, _ in running
            ]  # fmt: skip
            _all_at_once([*(functools.partial(ender, reason, signum) for ender in enders), *endings])

    @property
    def _ended_elsewhere(self) -> bool:
        """stop() is ending the local step now, and reaps it once its whole tree is ended."""
        return self.stopping and self._ending.locked()

    def _wait_for_ending(self) -> None:
        """Until stop() is done ending the step (the step's own thread must not reap it before)."""
        if self.stopping:
            with self._ending:
                pass

    def suspend(self) -> None:
        """Stop the running step's processes (Ctrl+Z). SIGSTOP, because the step's process group,
        alone in its session, is orphaned: the kernel discards a SIGTSTP sent to it."""
        with self._lock:
            if not self._running or self._suspended is not None:
                return
            orphans = self.subreaper and len(self._running) == 1
            members = {}
            for popen, _, _ in self._running.values():
                members[popen.pid] = step_processes(popen, orphans) if popen.returncode is None else []
                signal_all(popen, members[popen.pid], signal.SIGSTOP)
            self._suspended = (members, time.monotonic())

    def resume(self) -> None:
        """Continue what :meth:`suspend` stopped (``fg``/``bg``); the time stopped does not count
        towards the step's timeout."""
        with self._lock:
            if self._suspended is None:
                return
            members, since = self._suspended
            self._suspended = None
            self._paused += time.monotonic() - since
            for pid, (popen, _, _) in self._running.items():
                signal_all(popen, members.get(pid, []), signal.SIGCONT)

    def _paused_seconds(self, popen: subprocess.Popen[bytes]) -> float:
        """Seconds the step ``popen`` has spent suspended (Ctrl+Z) since it started."""
        with self._lock:
            running = self._running.get(popen.pid)
            return self._paused - running[2] if running is not None else 0.0

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking at once when :meth:`stop` is called; True if stopping."""
        return self._stopping.wait(seconds)

    def _started(self, popen: subprocess.Popen[bytes], name: str, pidfd: int | None = None) -> None:
        with self._lock:
            self._running[popen.pid] = (popen, name, self._paused)
        if self.watchdog is not None:
            self.watchdog.step_started(popen.pid, name, self.job_record, pidfd)

    @property
    def running_steps(self) -> int:
        """How many steps run now, here or elsewhere."""
        with self._lock:
            return len(self._running) + len(self._enders)

    def started_elsewhere(self, ender: Callable[[str, int], None]) -> int:
        """A step that does not run here has started; :meth:`stop` ends it with ``ender(reason, signum)``.

        Returns:
            The token to hand to :meth:`finished_elsewhere`.
        """
        with self._lock:
            token = next(_tokens)
            self._enders[token] = ender
            return token

    def finished_elsewhere(self, token: int) -> None:
        with self._lock:
            self._enders.pop(token, None)

    def _finished(self, popen: subprocess.Popen[bytes]) -> None:
        with self._lock:
            running = self._running.pop(popen.pid, None)
            if self._suspended is not None:
                self._suspended[0].pop(popen.pid, None)
        if self.watchdog is not None and running is not None:
            self.watchdog.step_ended(popen.pid)

    def _leave_running(self, fd: int, on_output: Callable[[bytes], None]) -> None:
        """Keep relaying pipe ``fd`` (now owned by the guard) until whatever holds it closes it."""
        with self._lock:
            if self._leftovers is None:
                self._leftovers = _Leftovers(self.leftover_output or on_output)
            leftovers = self._leftovers
        leftovers.adopt(fd)


def supervise_steps(guard: StepGuard) -> None:
    """Once, from the main thread, before the first step: make job control and orphans Lynx's business.

    Ctrl+Z suspends the running step with Lynx, and ``fg``/``bg`` continue both (the step has its
    own session, so the terminal's SIGTSTP reaches Lynx only). On Linux Lynx becomes a child
    subreaper: a daemon a step starts with the classic double fork is re-parented to Lynx instead
    of to init, so Ctrl+C, SIGTERM and a timeout still find it.
    """

    def on_terminal_stop(signum: int, frame: object) -> None:
        guard.suspend()
        try:
            signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTSTP)  # Lynx stops here, until SIGCONT
        finally:
            signal.signal(signal.SIGTSTP, on_terminal_stop)
            guard.resume()

    signal.signal(signal.SIGTSTP, on_terminal_stop)
    if sys.platform.startswith("linux"):
        guard.subreaper = become_subreaper()


def run_step(
    argv: Sequence[str],
    on_output: Callable[[bytes], None],
    *,
    name: str,
    guard: StepGuard,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    inherit_stdin: bool = True,
    timeout: float | None = None,
) -> StepExit:
    """Run ``argv`` to its end, passing its merged stdout/stderr to ``on_output`` chunk by chunk.

    The step gets its own session and process group, so a terminal's Ctrl+C reaches Lynx only,
    and Lynx ends the step's whole tree. Any exception while it runs (Ctrl+C, SIGTERM) ends the
    step, the signal Lynx received first, before it propagates.

    The step is done when its own process exits: what is in the pipe then is passed on, and
    whatever it left running that still holds the pipe is relayed from then on by ``guard``.
    Without ``inherit_stdin`` the step reads an empty input, so it can never wait for an answer.
    A step still running ``timeout`` seconds after it started (not counting time suspended with
    Ctrl+Z) is ended as on SIGTERM.

    Returns:
        How the step ended; a step that could not be started at all exits 127 (not found) or
        126 (found but not startable), with the reason in ``launch_error``.
    """
    try:
        popen = spawn(
            argv,
            stdin=None if inherit_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as error:
        return _not_started(error)
    assert popen.stdout is not None
    fd = popen.stdout.fileno()
    pidfd = None
    timed_out = False
    left_running = False
    try:
        pidfd = open_pidfd(popen.pid)
        guard._started(popen, name, pidfd)
        if guard.stopping:
            end_process_tree(
                popen, name, "Lynx is stopping", guard.grace, first=guard.stop_signal,
                orphans=guard.subreaper and guard.running_steps == 1, stopping=True,
            )  # fmt: skip
        started = time.monotonic()
        _widen_pipe(fd)
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if pidfd is not None:
            # Readable when the step exits, whoever else still holds its output pipe.
            poller.register(pidfd, select.POLLIN)
        next_check = started + FLOWING_CHECK
        pipe_open = True
        ending = False
        while True:
            chunk: bytes | None = None
            if pipe_open:
                with contextlib.suppress(BlockingIOError):
                    chunk = os.read(fd, CHUNK_SIZE)
                if chunk == b"":
                    # Every writer has closed the pipe: the usual end, unless the step lives on
                    # without it (it redirected its output) and has a timeout to keep.
                    if timeout is None and not ending:
                        break
                    pipe_open = False
                    poller.unregister(fd)
            if chunk:
                on_output(chunk)
                now = time.monotonic()
                if now < next_check:
                    continue
                next_check = now + FLOWING_CHECK
            elif chunk is None:
                left = None if timeout is None else started + guard._paused_seconds(popen) + timeout - time.monotonic()
                wait = left if pidfd is not None else EXIT_CHECK if left is None else min(left, EXIT_CHECK)
                events = poller.poll(poll_ms(EXIT_CHECK if ending else wait))
                if pipe_open and any(ready == fd for ready, _ in events):
                    continue
            if guard._ended_elsewhere:
                # Another thread ends the step (Ctrl+C on a schedule): relay what it prints meanwhile,
                # and leave its exit to that thread, watching for the end a few times a second.
                if not ending and pidfd is not None:
                    poller.unregister(pidfd)
                ending = True
                continue
            if popen.poll() is not None:
                left_running = pipe_open and not _drain(fd, on_output)
                break
            if timeout is not None and time.monotonic() - started - guard._paused_seconds(popen) >= timeout:
                timed_out = True
                alone = guard.running_steps == 1
                end_process_tree(
                    popen, name, f"timed out after {timeout:g} s", guard.grace, orphans=guard.subreaper and alone
                )
                left_running = pipe_open and not _drain(fd, on_output)
                break
        guard._wait_for_ending()
        returncode = popen.wait()
        if left_running:
            guard._leave_running(os.dup(fd), on_output)
        return StepExit(returncode, timed_out=timed_out)
    except BaseException as error:
        end_process_tree(
            popen,
            name,
            describe_interruption(error),
            guard.grace,
            first=forwarded_signal(error),
            orphans=guard.subreaper and guard.running_steps == 1,
            stopping=True,
        )
        # What the step printed while it was being ended (say, "saving a checkpoint") is kept.
        _drain(fd, on_output)
        raise
    finally:
        guard._finished(popen)
        if popen.returncode is not None:
            released(popen)
        if pidfd is not None:
            os.close(pidfd)
        popen.stdout.close()


_tokens = itertools.count(1)


def _all_at_once(calls: Sequence[Callable[[], object]]) -> None:
    """Make the calls, each in a thread of its own but the last (in this one), and wait for all."""
    threads = [threading.Thread(target=call, name="lynx-end", daemon=True) for call in calls[:-1]]
    for thread in threads:
        thread.start()
    try:
        if calls:
            calls[-1]()
    finally:
        for thread in threads:
            thread.join()


def _not_started(error: OSError) -> StepExit:
    """A step whose process could not be started (too long arguments, no memory, no execute
    permission, a missing interpreter) is a failed step, as in a shell: 127 not found, else 126."""
    reason = error.strerror or str(error)
    if error.filename is not None:
        reason += f": {error.filename}"
    if error.errno in (errno.EAGAIN, errno.ENOMEM):
        reason += " (the system could not create a process)"
    return StepExit(127 if error.errno == errno.ENOENT else 126, launch_error=reason)


def _drain(fd: int, on_output: Callable[[bytes], None], limit: int = PIPE_SIZE) -> bool:
    """Pass on what is in the (non-blocking) pipe now, at most ``limit`` bytes (more than it can
    hold); True if every writer has closed it."""
    taken = 0
    try:
        while taken < limit:
            chunk = os.read(fd, CHUNK_SIZE)
            if not chunk:
                return True
            taken += len(chunk)
            on_output(chunk)
    except OSError:
        pass  # BlockingIOError: empty for now; anything else: nothing more to read
    return False


def _widen_pipe(fd: int) -> None:
    """Let a fast step write up to PIPE_SIZE ahead: fewer, larger reads and fewer wake-ups."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (ImportError, OSError):
        pass  # not Linux, or above the system's pipe-max-size: the default pipe works too


class _Leftovers:
    """Relays the output of processes finished steps left running, for as long as Lynx runs.

    One daemon thread, asleep in poll() until something is written, serves every such pipe. It
    passes on whole lines only, so a leftover's line never lands inside another one in the log.
    """

    def __init__(self, output: Callable[[bytes], None]) -> None:
        self._output = output
        self._lock = threading.Lock()
        self._new: list[int] = []
        self._wake_read, self._wake_write = os.pipe()
        threading.Thread(target=self._relay, name="lynx-leftovers", daemon=True).start()

    def adopt(self, fd: int) -> None:
        with self._lock:
            self._new.append(fd)
        os.write(self._wake_write, b"\0")

    def _relay(self) -> None:
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        partial: dict[int, bytes] = {}
        while True:
            for fd, _ in poller.poll():
                if fd == self._wake_read:
                    os.read(self._wake_read, 4096)
                    with self._lock:
                        new, self._new = self._new, []
                    for each in new:
                        partial[each] = b""
                        poller.register(each, select.POLLIN)
                    continue
                try:
                    chunk = os.read(fd, CHUNK_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                data = partial.pop(fd) + chunk
                if not chunk:
                    poller.unregister(fd)
                    os.close(fd)
                    if data:
                        self._output(data + b"\n")
                    continue
                cut = data.rfind(b"\n") + 1
                if not cut and len(data) >= LEFTOVER_LINE:
                    cut = len(data)
                if cut:
                    self._output(data[:cut])
                partial[fd] = data[cut:]
