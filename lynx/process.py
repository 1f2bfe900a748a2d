"""Start a step, stream its output, and end it (and everything it started) when asked."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

# Seconds a step gets between SIGTERM and SIGKILL.
TERMINATE_GRACE = 5.0
CHUNK_SIZE = 256 * 1024
PIPE_SIZE = 1024 * 1024
# How often to check whether a silent step has exited although its output pipe is still open
# (something it started in the background holds it).
EXIT_CHECK_MS = 200

log = logging.getLogger("lynx")


class StepGuard:
    """Lets any thread end the step that is running now, and keeps new steps from starting."""

    def __init__(self, grace: float = TERMINATE_GRACE) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._running: tuple[subprocess.Popen[bytes], str] | None = None
        self._stopping = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, reason: str) -> None:
        """End the running step, if any; no step starts after this."""
        self._stopping.set()
        with self._lock:
            running = self._running
        if running is not None:
            popen, name = running
            end_process_tree(popen, name, reason, self.grace)

    def _started(self, popen: subprocess.Popen[bytes], name: str) -> None:
        with self._lock:
            self._running = (popen, name)

    def _finished(self) -> None:
        with self._lock:
            self._running = None


def run_step(
    argv: Sequence[str],
    on_output: Callable[[bytes], None],
    *,
    name: str,
    guard: StepGuard,
    env: Mapping[str, str] | None = None,
    inherit_stdin: bool = True,
) -> int:
    """Run ``argv`` to its end, passing its merged stdout/stderr to ``on_output`` chunk by chunk.

    The step gets its own session and process group, so a terminal's Ctrl+C reaches Lynx only,
    and Lynx ends the step's whole tree. Any exception while it runs (Ctrl+C, SIGTERM) ends the
    step before it propagates.

    Without ``inherit_stdin`` the step reads an empty input, so it can never wait for an answer.

    Returns:
        The step's exit code (negative: killed by that signal).
    """
    popen = subprocess.Popen(
        list(argv),
        stdin=None if inherit_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    assert popen.stdout is not None
    fd = popen.stdout.fileno()
    try:
        guard._started(popen, name)
        if guard.stopping:
            end_process_tree(popen, name, "Lynx is stopping", guard.grace)
        _widen_pipe(fd)
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            try:
                chunk = os.read(fd, CHUNK_SIZE)
            except BlockingIOError:
                # Nothing to read: wait for output, but notice a step that has exited while
                # something it started in the background still holds the pipe open.
                if not poller.poll(EXIT_CHECK_MS) and popen.poll() is not None:
                    _drain(fd, on_output)
                    break
                continue
            if not chunk:
                break
            on_output(chunk)
        return popen.wait()
    except BaseException as error:
        end_process_tree(popen, name, describe_interruption(error), guard.grace)
        # What the step printed while it was being ended (say, "saving a checkpoint") is kept.
        _drain(fd, on_output)
        raise
    finally:
        guard._finished()
        popen.stdout.close()


def _drain(fd: int, on_output: Callable[[bytes], None]) -> None:
    """Pass on what is left in the (non-blocking) pipe."""
    with contextlib.suppress(OSError):
        while chunk := os.read(fd, CHUNK_SIZE):
            on_output(chunk)


def _widen_pipe(fd: int) -> None:
    """Let a fast step write up to PIPE_SIZE ahead: fewer, larger reads and fewer wake-ups."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (ImportError, OSError):
        pass  # not Linux, or above the system's pipe-max-size: the default pipe works too


def describe_interruption(error: BaseException) -> str:
    """Say what stopped Lynx, for the log: Ctrl+C, a signal's name, or the error."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl+C)"
    signum = getattr(error, "signum", None)
    if signum is not None:
        return f"interrupted ({signal.Signals(signum).name})"
    return f"interrupted ({type(error).__name__}: {error})"


def end_process_tree(popen: subprocess.Popen[bytes], name: str, reason: str, grace: float = TERMINATE_GRACE) -> None:
    """SIGTERM the step's process group and every process in its tree; SIGKILL what outlives ``grace``.

    Two mechanisms, because each misses something: a child that called setsid has left the
    group but is still in the tree; a grandchild whose parent died has left the tree but is
    still in the group. Only processes found while the step was still unreaped are signalled,
    by psutil, which checks that each PID still belongs to the process it found. Ctrl+C and
    SIGTERM wait until this is done, so a second press cannot leave the step running.
    """
    import psutil

    with _signals_deferred():
        unreaped = popen.returncode is None
        members = _tree_and_group(popen) if unreaped else []
        log.warning(f"{name} {reason}: ending it (SIGTERM to PID {popen.pid} and {len(members)} more process(es)).")
        _signal_all(popen, members, signal.SIGTERM)
        deadline = time.monotonic() + grace
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=grace)
        _, alive = psutil.wait_procs(members, timeout=max(deadline - time.monotonic(), 0.1))
        if popen.returncode is None or alive:
            log.warning(f"{name} did not exit within {grace:g} s of SIGTERM: killing it (SIGKILL).")
            _signal_all(popen, alive, signal.SIGKILL)
            popen.wait()
            psutil.wait_procs(alive, timeout=2)


def _tree_and_group(popen: subprocess.Popen[bytes]) -> list[Any]:
    """The step's descendants and the other members of its process group, as psutil processes."""
    import psutil

    members: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        members = {child.pid: child for child in psutil.Process(popen.pid).children(recursive=True)}
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if process.pid != popen.pid and process.pid not in members and os.getpgid(process.pid) == popen.pid:
                members[process.pid] = process
    return list(members.values())


def _signal_all(popen: subprocess.Popen[bytes], others: list[Any], signum: int) -> None:
    import psutil

    if popen.returncode is None:
        # The leader is not yet reaped, so its PID (the group's ID) cannot belong to anyone else.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signum)
    for process in others:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold off Ctrl+C and SIGTERM while a step is being ended, so a second press cannot orphan it."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            saved[signum] = signal.signal(signum, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
