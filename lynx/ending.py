"""Ending a step's process tree (the signal Lynx received, SIGTERM, SIGKILL, a grace between), and holding
off Ctrl+C and termination signals while it is ended."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from lynx.children import own_children

# Seconds a step gets after each signal (the one forwarded, then SIGTERM) before the next.
TERMINATE_GRACE = 5.0
# poll() takes at most a C int of milliseconds (24.8 days): longer waits are taken an hour at a time.
LONGEST_POLL_MS = 3_600_000
# What signals_deferred() holds off: Ctrl+C, termination, the terminal closing, Ctrl+Z.
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP)

log = logging.getLogger("lynx")


def describe_interruption(error: BaseException) -> str:
    """Say what stopped Lynx, for the log: Ctrl+C, a signal's name, or the error."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl+C)"
    signum = getattr(error, "signum", None)
    if signum is not None:
        return f"interrupted ({signal.Signals(signum).name})"
    return f"interrupted ({type(error).__name__}: {error})"


def forwarded_signal(error: BaseException) -> int:
    """What the step gets first when Lynx is interrupted: what Lynx got (SIGINT for Ctrl+C)."""
    if isinstance(error, KeyboardInterrupt):
        return signal.SIGINT
    signum = getattr(error, "signum", None)
    return signum if signum in (signal.SIGTERM, signal.SIGHUP) else signal.SIGTERM


def end_process_tree(
    popen: subprocess.Popen[bytes],
    name: str,
    reason: str,
    grace: float = TERMINATE_GRACE,
    *,
    first: int = signal.SIGTERM,
    orphans: bool = False,
    stopping: bool = False,
) -> None:
    """Signal the step's process group and every process in its tree: ``first`` (what Lynx
    received), then SIGTERM, then SIGKILL, each after ``grace`` seconds, each said in the log.

    Two mechanisms, because each misses something: a child that called setsid has left the
    group but is still in the tree; a grandchild whose parent died has left the tree but is
    still in the group. With ``orphans`` (Lynx is a subreaper), Lynx's own children started
    since the step are the step's too: its double-forked daemons. The step's own process is
    reaped only at the end: until then its PID, and so its group, cannot be anyone else's, and
    each round looks again for what the step started meanwhile (a trap that forks). Others are
    signalled through psutil, which checks that each PID still belongs to the process it found.
    Ctrl+C and SIGTERM wait until this is done, so a second press cannot leave the step running.

    Args:
        stopping: Lynx itself is being interrupted; a Ctrl+C or SIGTERM arriving meanwhile adds
            nothing (else it is raised once the step has ended).
    """
    with signals_deferred(reraise=not stopping):
        if popen.returncode is not None:
            return  # reaped: it has ended, and its PID may be another process's by now
        import psutil  # under the deferral: the first import takes long enough for a second Ctrl+C

        pidfd = open_pidfd(popen.pid)
        try:
            alive = step_processes(popen, orphans)
            signals = [first] if first == signal.SIGTERM else [first, signal.SIGTERM]
            log.warning(
                f"{name} {reason}: ending it ({signal.Signals(first).name} to PID {popen.pid}"
                f" and {len(alive)} more process(es))."
            )
            exited = False
            for index, signum in enumerate(signals):
                if index:
                    previous = signal.Signals(signals[index - 1]).name
                    if exited:
                        log.warning(f"{name} has exited, {len(alive)} process(es) it started not yet: sending SIGTERM.")
                    else:
                        log.warning(f"{name} did not exit within {grace:g} s of {previous}: sending SIGTERM.")
                signal_all(popen, alive, signum)
                # A process suspended with Ctrl+Z could not act on the signal.
                signal_all(popen, alive, signal.SIGCONT)
                deadline = time.monotonic() + grace
                exited = _exits_within(popen, pidfd, grace)
                _, alive = psutil.wait_procs(alive, timeout=max(deadline - time.monotonic(), 0.1))
                alive = step_processes(popen, orphans, alive)
                if exited and not alive:
                    break
            else:
                what = f"{name}: {len(alive)} process(es) it started" if exited else name
                log.warning(f"{what} did not exit within {grace:g} s of SIGTERM: killing it (SIGKILL).")
                signal_all(popen, alive, signal.SIGKILL)
                psutil.wait_procs(alive, timeout=2)
        finally:
            if popen.returncode is None and not _exits_within(popen, pidfd, 0):
                signal_all(popen, [], signal.SIGKILL)  # only after an unexpected error: never leave it running
            popen.wait()
            if pidfd is not None:
                os.close(pidfd)


def _exits_within(popen: subprocess.Popen[bytes], pidfd: int | None, seconds: float) -> bool:
    """Wait up to ``seconds`` for the step's process to exit, leaving it unreaped where a pidfd
    tells (Linux); elsewhere it is reaped on exit."""
    if pidfd is None:
        try:
            popen.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(poll_ms(seconds)))


def step_processes(popen: subprocess.Popen[bytes], orphans: bool, known: Sequence[Any] = ()) -> list[Any]:
    """The step's descendants, the other members of its process group and, with ``orphans``,
    Lynx's children started since the step that are not its own (with their descendants), as psutil
    processes; with
    those of ``known`` that are still running. None but ``known`` once the step is reaped."""
    import psutil

    if popen.returncode is not None:
        return [each for each in known if each.is_running()]
    members: dict[int, psutil.Process] = {each.pid: each for each in known if each.is_running()}
    with contextlib.suppress(psutil.Error):
        step = psutil.Process(popen.pid)
        members.update((child.pid, child) for child in step.children(recursive=True))
        if orphans:
            # Start times count in clock ticks; within one tick, PIDs are handed out in order.
            started = (step.create_time(), popen.pid)
            own = own_children()  # Lynx's own (a hook command, srun of a SLURM step): never the step's
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    if child.pid not in own and (child.create_time(), child.pid) > started:
                        members[child.pid] = child
                        members.update((each.pid, each) for each in child.children(recursive=True))
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if process.pid != popen.pid and process.pid not in members and os.getpgid(process.pid) == popen.pid:
                members[process.pid] = process
    return list(members.values())


def signal_all(popen: subprocess.Popen[bytes], others: list[Any], signum: int) -> None:
    import psutil

    if popen.returncode is None:
        # The leader is not yet reaped, so its PID (the group's ID) cannot belong to anyone else.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signum)
    for process in others:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)


@contextlib.contextmanager
def signals_deferred(reraise: bool = True, on_arrival: Callable[[int], None] | None = None) -> Iterator[None]:
    """Hold off Ctrl+C, SIGTERM, SIGHUP and Ctrl+Z (in the main thread) while a step is being ended,
    so a second press cannot orphan it and a suspended Lynx cannot hold its end up.

    Args:
        reraise: once done, raise what arrived meanwhile (a Ctrl+C while a timed-out step is
            ended still stops Lynx): a termination signal before a Ctrl+Z, which it makes moot;
            else it is dropped. Inside another deferral, what arrived is handed to that one.
        on_arrival: told each signal as it arrives (a SLURM job's end gives up waiting for a
            controller that does not answer on a second Ctrl+C).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame: object) -> None:
        arrived.append(signum)
        if on_arrival is not None:
            on_arrival(signum)

    hold.lynx_hold = True  # type: ignore[attr-defined]
    saved: dict[int, Any] = {signum: signal.signal(signum, hold) for signum in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        # Blocked while the handlers are put back: none can run half-way through.
        signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
        try:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED_SIGNALS)
        outer = [signum for signum in arrived if getattr(saved[signum], "lynx_hold", False)]
        for signum in outer:
            saved[signum](signum, None)
        terminating = [signum for signum in arrived if signum != signal.SIGTSTP]
        if reraise and not outer and arrived:
            signal.raise_signal(terminating[0] if terminating else signal.SIGTSTP)


def poll_ms(seconds: float | None) -> int | None:
    """``seconds`` as poll()'s timeout: whole milliseconds, rounded up, at most an hour (None: forever)."""
    return None if seconds is None else min(max(int(seconds * 1000) + 1, 0), LONGEST_POLL_MS)


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined, no-any-return] # Linux 5.3+, Python 3.9+
    except (AttributeError, OSError):
        return None
