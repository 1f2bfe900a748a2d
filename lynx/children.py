"""Lynx's child processes: which are its own (waited for by their own threads), the orphans it reaps as a
child subreaper, and what identifies a process beyond its PID."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from typing import Any, Sequence

PR_SET_CHILD_SUBREAPER = 36


def process_start(pid: int) -> int | None:
    """The process's start in clock ticks since boot (``/proc/PID/stat`` field 22): with the boot's
    id, an identity no reused PID and no clock change can fake. None where there is no ``/proc``."""
    try:
        # os.open and one read: a third of the cost of open() (paid per step where there is no pidfd).
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        # Fields after the command name (which may hold spaces and parentheses) start at field 3.
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str | None:
    """This boot's id, which start ticks count from."""
    try:
        # Bytes, decoded as UTF-8 (the id is ASCII): no codec to load for it.
        with open("/proc/sys/kernel/random/boot_id", "rb") as handle:
            return handle.read().decode().strip()
    except OSError:
        return None


class _OwnChildren:
    """The children Lynx's own threads wait for (steps, srun, hook commands, SLURM's commands).

    Lynx is a subreaper: orphans of its steps become its children, and :func:`reap_orphans` reaps
    those that exited. It must never reap one of these instead, or its thread's ``wait()`` would find
    no child and take its exit code for 0. Spawning and registering happen under the lock reaping
    holds, so no child is seen before it is known. Process-wide by nature: so are the children.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pids: set[int] = set()


_OWN = _OwnChildren()


def spawn(argv: Sequence[str], **popen_arguments: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, ...)`` of a child Lynx waits for itself; :func:`released` once it was waited for.

    Raises:
        OSError: it could not be started.
    """
    with _OWN.lock:
        popen: subprocess.Popen[Any] = subprocess.Popen(list(argv), **popen_arguments)
        _OWN.pids.add(popen.pid)
    return popen


def own_children() -> set[int]:
    """The PIDs of Lynx's own children now (:func:`spawn`): never a step's orphans."""
    with _OWN.lock:
        return set(_OWN.pids)


def released(popen: subprocess.Popen[Any]) -> None:
    """``popen`` (from :func:`spawn`) has been waited for: its PID is no longer Lynx's to keep."""
    with _OWN.lock:
        _OWN.pids.discard(popen.pid)


def reap_orphans() -> None:
    """Reap processes re-parented to Lynx (a subreaper) that have exited.

    Called after each step (lynx.launch). Each zombie child is first looked at without being reaped
    (WNOWAIT), then reaped by its own PID, unless it is one of Lynx's own children, which its own
    thread reaps: then the orphans behind it wait for the next time.
    """
    with _OWN.lock:
        for _ in range(10_000):
            try:
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None or found.si_pid == 0 or found.si_pid in _OWN.pids:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(found.si_pid, os.WNOHANG)


def become_subreaper() -> bool:
    """Make orphans of Lynx's descendants Lynx's children (Linux), so that they are found and reaped."""
    try:
        import ctypes  # about 1.5 ms, paid only by runs that start steps

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
        return False
