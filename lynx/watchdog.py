"""Lynx's watchdog: a small process that ends the running step (and cancels its SLURM job) if Lynx dies.

Lynx ends its steps on Ctrl+C, SIGTERM, ``lynx stop`` and every error, but nothing can run in a
process killed with SIGKILL (the OOM killer, ``kill -9``, a hard logout). ``PR_SET_PDEATHSIG``
would reach only a step's own process, and it fires when the *thread* that started the step ends
(a scheduler's steps start in worker threads). So each Lynx run starts a watchdog once, through
``sh -c '"$@" &'`` so that init adopts it: it is in no one's tree, and nothing that walks Lynx's
tree (``lynx stop``, a supervisor, a test) signals it. It is spawned (``posix_spawn``: no copy of
Lynx's memory, so Lynx pays neither a fork nor copy-on-write faults for the rest of its run) as a
small interpreter of its own (``python -I``) that imports next to nothing until Lynx dies.

The watchdog holds one end of a socket pair (``SOCK_SEQPACKET``: one message each, from whatever
thread) whose other end only Lynx holds. Lynx sends a message when a step's process starts (``S``:
its PID with a pidfd of it, an exact reference that no reused PID can fool, or else its start in
clock ticks since boot; the SLURM job record it serves if it is ``srun``; its label) and ends
(``E``), and when a SLURM job is submitted (``J``: its record in ``.lynx/jobs/``) and done (``D``).
The end of the socket means Lynx has exited. With nothing registered (a normal exit) the watchdog
exits at once (within a millisecond or two; Lynx does not wait for it). Otherwise Lynx died, and
the watchdog does what Lynx would have done:

- a SLURM job gets SIGTERM through ``scancel``, then SIGKILL after the grace, and is cancelled; if
  the controller does not answer within the grace, its record says so, and the next ``lynx start``,
  ``lynx status`` or ``lynx stop`` here cancels it (see :mod:`lynx.jobs`);
- a step's tree (its process, its descendants, its process group and session) gets SIGTERM, then
  SIGKILL after the grace; ``srun`` only once its job has been dealt with.

It never signals a process that is not the step's: the step's own process is known by its pidfd
(or start time), its group and session only while that process is still there (their IDs are its
PID), and every other process is signalled through psutil, which checks that its PID has not been
reused. It has its own session (a terminal's signals never reach it), its standard streams on
/dev/null and no other file of Lynx's open; what it does after Lynx's death it appends to Lynx's
log file, if there is one.
"""

from __future__ import annotations

import os
import sys

# Not typing's: importing typing would cost the watchdog's own start 4 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

# A label is cut to this many characters: a message stays small.
LABEL_LIMIT = 200
# How long Lynx waits to tell a watchdog that does not read (stopped, or gone) before it gives up on it.
SEND_TIMEOUT = 1.0
# The watchdog's program: the socket is its file descriptor 3.
BOOT = "import sys; sys.path.insert(0, {root!r}); from lynx.watchdog import main; main()"
CHANNEL_FD = 3


class Watchdog:
    """Lynx's end of the socket: tell the watchdog what runs, so that it can end it should Lynx die."""

    def __init__(self, channel: Any, middle: int) -> None:
        self._channel = channel
        # The sh in between, which exits once it has started the watchdog.
        self._middle = middle
        self._warned = False

    def adopted(self) -> None:
        """Return once init has adopted the watchdog (the sh in between has exited and is reaped).
        Call it before Lynx becomes a child subreaper: else Lynx, not init, would adopt it."""
        if self._middle > 0:
            try:  # noqa: SIM105 - contextlib would cost the watchdog's start
                os.waitpid(self._middle, 0)
            except ChildProcessError:
                pass
            self._middle = 0

    def step_started(self, pid: int, label: str, job_record: str | None = None, pidfd: int | None = None) -> None:
        """A step's process has started (``pidfd``: a pidfd of it, passed along: an exact reference)."""
        job = job_record or "-"
        if pidfd is not None:
            self._send(f"S {pid} - {job} {label[:LABEL_LIMIT]}", pidfd)
            return
        # Without a pidfd (Linux before 5.3), the process is known by its start time instead: read
        # now, while it cannot have been reaped.
        from lynx.children import process_start

        ticks = process_start(pid)
        if ticks is not None:
            self._send(f"S {pid} {ticks} {job} {label[:LABEL_LIMIT]}")

    def step_ended(self, pid: int) -> None:
        self._send(f"E {pid}")

    def job_started(self, record: str) -> None:
        self._send(f"J {record}")

    def job_done(self, record: str) -> None:
        self._send(f"D {record}")

    def close(self) -> None:
        """Lynx is exiting normally: the watchdog sees the end of the socket and exits at once (a
        millisecond or two later: Lynx does not wait for that)."""
        self.adopted()
        self._channel.close()

    def _send(self, line: str, fd: int | None = None) -> None:
        # One message each (a SOCK_SEQPACKET socket keeps them apart, from whatever thread). A
        # watchdog that stopped reading holds Lynx up once, for at most a second (the socket's
        # timeout): then Lynx says so and tells it nothing more.
        if self._warned:
            return
        data = line.replace("\n", "\\n").replace("\r", "\\r").encode("utf-8", "replace")
        import _socket

        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))] if fd is not None else []
        try:
            self._channel.sendmsg([data], rights)
        except OSError as error:
            self._warned = True
            from lynx.logs import get_logger

            get_logger().warning(
                f"Lynx's watchdog cannot be told what runs ({error.strerror or error or 'it does not read'}): "
                "should Lynx be killed, its steps would not be ended."
            )


def start_watchdog(*, grace: float, log_file: str | None, environ: Mapping[str, str] = os.environ) -> Watchdog | None:
    """Start the watchdog (Linux only: it needs ``/proc`` to tell processes apart); None where it cannot be.

    Call :meth:`Watchdog.adopted` before Lynx becomes a child subreaper (:func:`lynx.process.supervise_steps`),
    so that init, not Lynx, adopts it: in between, Lynx can go on with its own set-up while the sh in
    between starts the watchdog and exits.

    Args:
        grace: seconds a step gets after SIGTERM before SIGKILL.
        log_file: Lynx's log file (relative to the working directory, which the watchdog shares).
        environ: the watchdog's environment (SLURM's commands read theirs from it).
    """
    from lynx.children import process_start

    if not sys.platform.startswith("linux") or process_start(os.getpid()) is None:
        return None
    # The C module alone: the socket module would cost a one-shot run 2 ms more to import.
    import _socket

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Where Lynx found psutil and its other packages (-I -S leave out site-packages, PYTHONPATH and a
    # user site: a start of a few milliseconds), for the watchdog to import them should Lynx die;
    # never the working directory.
    cwd = os.getcwd()
    paths = os.pathsep.join(path for path in sys.path if os.path.isabs(path) and path != cwd)
    argv = [
        "sh", "-c", '"$@" &', "lynx-watchdog",
        sys.executable, "-I", "-S", "-c", BOOT.format(root=root), str(os.getpid()), repr(float(grace)), log_file or "",
        paths,
    ]  # fmt: skip
    try:
        channel, watchdog_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    except OSError:
        return None
    try:
        middle = os.posix_spawn(
            "/bin/sh",
            argv,
            dict(environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, watchdog_end.fileno(), CHANNEL_FD),
            ],
            setsid=True,  # no terminal: Ctrl+C, Ctrl+Z and the terminal closing do not reach it
        )
    except OSError:
        channel.close()
        return None
    finally:
        watchdog_end.close()
    channel.settimeout(SEND_TIMEOUT)
    return Watchdog(channel, middle)


def main() -> None:
    """The watchdog's program (``python -I -c BOOT LYNX_PID GRACE LOG_FILE PATHS``, the socket on fd 3):
    read what Lynx says until the socket ends; then, if Lynx died, end what ran."""
    import _socket

    lynx, grace, log_file, paths = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] or None, sys.argv[4]
    _detach(keep=CHANNEL_FD)
    _retitle(f"lynx-watchdog (Lynx PID {lynx})")
    channel = _socket.socket(fileno=CHANNEL_FD)
    steps: dict[int, _Step] = {}
    jobs: dict[str, None] = {}
    while True:
        try:
            data, ancillary, _, _ = channel.recvmsg(4096, _socket.CMSG_SPACE(4))
        except InterruptedError:
            continue
        fds = [int.from_bytes(item[2][:4], sys.byteorder) for item in ancillary if item[1] == _socket.SCM_RIGHTS]
        if not data and not fds:
            break  # Lynx has closed its end: it has exited, or died
        _take(data.decode("utf-8", "replace"), fds[0] if fds else None, steps, jobs)
    if steps or jobs:
        sys.path += [path for path in paths.split(os.pathsep) if path and path not in sys.path]
        _after_death(steps, jobs, lynx=lynx, grace=grace, say=_log_writer(log_file))


class _Step:
    """A step's process as Lynx described it: a pidfd of it, else its start in clock ticks since boot."""

    def __init__(self, pid: int, pidfd: int | None, ticks: int | None, job_record: str | None, label: str) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.ticks = ticks
        self.job_record = job_record
        self.label = label

    def forget(self) -> None:
        if self.pidfd is not None:
            try:  # noqa: SIM105 - contextlib would cost the watchdog's start
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = None


def _detach(keep: int) -> None:
    """Let go of everything of Lynx's (its standard streams are /dev/null already): every other file
    descriptor closed (those Lynx got without close-on-exec from whoever started it), and a
    terminal's signals ignored."""
    import _signal  # type: ignore[import-not-found]  # signal's C module: signal (with enum) costs the start

    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd > 2 and fd != keep:
            try:  # noqa: SIM105 - contextlib would cost the watchdog's start
                os.close(fd)
            except OSError:
                pass
    for name in ("SIGINT", "SIGHUP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGQUIT"):
        _signal.signal(getattr(_signal, name), _signal.SIG_IGN)


def _retitle(title: str) -> None:
    """Name the watchdog in ps, psutil and /proc: ``lynx-watchdog``, not ``python -I -S -c <its boot>``
    (which names neither what it is nor whose it is).

    The command line is the memory between ``arg_start`` and ``arg_end`` (/proc/self/stat): it is
    overwritten through /proc/self/mem, the title then a NUL (where /proc stops reading).
    """
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as comm:
            comm.write("lynx-watchdog")
    except OSError:
        pass
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


def _take(line: str, fd: int | None, steps: dict[int, _Step], jobs: dict[str, None]) -> None:
    kind, _, rest = line.partition(" ")
    try:
        if kind == "S":
            pid, ticks, job_record, label = [*rest.split(" ", 3), ""][:4]
            steps[int(pid)] = _Step(
                int(pid), fd, None if ticks == "-" else int(ticks), None if job_record == "-" else job_record, label
            )
            fd = None
        elif kind == "E":
            step = steps.pop(int(rest), None)
            if step is not None:
                step.forget()
        elif kind == "J":
            jobs[rest] = None
        elif kind == "D":
            jobs.pop(rest, None)
    except ValueError:
        pass  # not a message Lynx sends
    if fd is not None:
        os.close(fd)


def _log_writer(log_file: str | None) -> Callable[[str, str], None]:
    """Append lines to Lynx's log file as Lynx writes them: one write each, never creating the file,
    never waiting on a FIFO nobody reads."""

    def say(level: str, message: str) -> None:
        if not log_file:
            return
        import contextlib
        import time

        from lynx.logs import line_prefix

        with contextlib.suppress(OSError):
            fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
            try:
                os.write(fd, (line_prefix(time.time(), level) + message + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)

    return say


def _after_death(
    steps: dict[int, _Step], jobs: dict[str, None], *, lynx: int, grace: float, say: Callable[[str, str], None]
) -> None:
    """End what Lynx left running: its SLURM jobs and plain steps at once, each srun after its job."""
    import logging
    import threading

    # As Lynx says why it ends a step: "Step 2 (train.py) outlived Lynx (PID 4242), which has died: ending it (...)".
    died = f"outlived Lynx (PID {lynx}), which has died"

    class ToLogFile(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            say(record.levelname, record.getMessage())

    # What the SLURM code logs goes to the log file too, through the watchdog's one writer.
    logger = logging.getLogger("lynx")
    logger.handlers = [ToLogFile()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
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
    from lynx.logs import get_logger
    from lynx.slurm_job import end_left_job

    try:
        end_left_job(record, reason=reason, grace=grace)
    except Exception:  # a bug: its traceback goes to the log, and the record stays for the next 'lynx' command
        get_logger().exception(f"Lynx's watchdog could not end the SLURM job of {record}; it stays recorded.")


def _end_trees(steps: list[_Step], died: str, grace: float, say: Callable[[str, str], None]) -> None:
    """SIGTERM to each step's tree, then SIGKILL to what is left of it after ``grace`` seconds, each said."""
    if not steps:
        return
    import signal
    import time

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
    _signal_members(members, signal.SIGTERM)
    _signal_members(members, signal.SIGCONT)  # a step suspended with Ctrl+Z could not act on SIGTERM
    deadline = time.monotonic() + grace
    while any(members.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
        for step in steps:
            found = _members(step, leaders[step.pid], members[step.pid], psutil)
            # Found only now (started while being ended): SIGTERM too, and SIGKILL with the rest.
            _signal_members({step.pid: [each for each in found if each not in members[step.pid]]}, signal.SIGTERM)
            members[step.pid] = found
    for step in steps:
        if members[step.pid]:
            say("WARNING", f"{step.label} did not exit within {grace:g} s of SIGTERM: killing it (SIGKILL).")
        else:
            say("INFO", f"{step.label} has ended.")
    _signal_members(members, signal.SIGKILL)
    psutil.wait_procs([each for found in members.values() for each in found], timeout=2)


def _leader(step: _Step, psutil: Any) -> Any:
    """The step's own process, if it is still the one Lynx started (its pidfd still refers to it,
    even as a zombie; or its start time matches)."""
    try:
        process = psutil.Process(step.pid)
    except psutil.Error:
        return None
    import signal

    from lynx.children import process_start

    # Checked after psutil.Process(): from now on psutil checks before each signal that the PID is not reused.
    if step.pidfd is not None:
        try:
            signal.pidfd_send_signal(step.pidfd, 0)
        except OSError:
            return None
        return process
    return process if process_start(step.pid) == step.ticks else None


def _members(step: _Step, leader: Any, known: list[Any], psutil: Any) -> list[Any]:
    """The step's processes still running: while its own process is there (even as a zombie, its PID
    is the group's and the session's ID), it, its descendants and its group and session; after
    that, those known and their descendants."""
    import contextlib

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


def _signal_members(members: dict[int, list[Any]], signum: int) -> None:
    import contextlib

    import psutil

    for found in members.values():
        for process in found:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signum)
