"""Background schedulers: start one detached and record it, tell whether a record is still alive, end one.

Each scheduler has an entry in ``.lynx/schedulers/`` (see :mod:`lynx.state`); ``.lynx_pid.json``
keeps describing the most recently started one with the original Lynx's keys, for its scripts.
How the detached scheduler boots and says it is ready: :mod:`lynx.boot`.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import re
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lynx import state, statefiles
from lynx.boot import boot_command, is_boot
from lynx.children import boot_id, process_start
from lynx.errors import LynxError
from lynx.state import SchedulerEntry

PID_FILE = ".lynx_pid.json"
# The scheduler gets its step's grace (process.TERMINATE_GRACE) plus this long after SIGTERM to
# end its step and exit; then whatever is left of its tree is killed.
STOP_EXTRA_GRACE = 5.0
# Only for records without the kernel's start time (written by earlier versions): psutil's
# create time moves a little when the clock is set; with the command line, a second still
# tells a reused PID apart.
CREATE_TIME_TOLERANCE = 1.0
# The original Lynx ran its scheduler as 'python schedular.py ...'.
_ORIGINAL_SCRIPTS = ("schedular.py", "scheduler.py")
_PYTHON = re.compile(r"(python|pypy)[0-9.]*")
_UNTOUCHED = "it is left alone and nothing it names is signalled. Remove the file if no Lynx runs from here."


class Liveness(enum.Enum):
    ALIVE = "alive"
    GONE = "gone"
    # The PID is alive but belongs to a process other than the recorded one.
    REUSED = "reused"
    # The recorded process runs, but it is not a Lynx scheduler: the record describes another program.
    FOREIGN = "foreign"
    # The record belongs to another directory (this folder is a copy), or its scheduler works in
    # another one: it is not this directory's scheduler.
    ELSEWHERE = "elsewhere"
    # The process cannot be looked at (another user's, or /proc mounted with hidepid): maybe alive.
    UNKNOWN = "unknown"


def read_pid_file(path: Path) -> SchedulerEntry | None:
    """The scheduler ``.lynx_pid.json`` describes, or None if there is no file.

    Files of the original Lynx (six keys) and of later versions (extra keys) are read too: what
    identifies the process is its PID and command line, and its create time when present.

    Raises:
        LynxError: the file is unreadable, not JSON, or has no usable ``pid`` or ``cmdline``.
    """
    from lynx.schema import parse_json

    try:
        text = statefiles.read_bounded(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise LynxError(f"{path}: cannot read it: {error.strerror or error}; {_UNTOUCHED}") from None
    try:
        data = parse_json(text)
    except ValueError as error:
        raise LynxError(f"{path} is not valid JSON ({error}); {_UNTOUCHED}") from None
    if not isinstance(data, dict) or "pid" not in data or "cmdline" not in data:
        raise LynxError(f"{path} is not a Lynx pid file; {_UNTOUCHED}")
    pid, cmdline, created = data["pid"], data["cmdline"], data.get("create_time")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise LynxError(f"{path}: 'pid' is not a positive number; {_UNTOUCHED}")
    if not isinstance(cmdline, list) or not all(isinstance(word, str) for word in cmdline):
        raise LynxError(f"{path}: 'cmdline' is not a list of strings; {_UNTOUCHED}")
    if created is not None and (not isinstance(created, (int, float)) or isinstance(created, bool)):
        raise LynxError(f"{path}: 'create_time' is not a number; {_UNTOUCHED}")

    def text_of(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    config_file = text_of("config_file")
    name = Path(config_file).stem if config_file else ""
    return SchedulerEntry(
        name=name if state.NAME_PATTERN.fullmatch(name) else "lynx",
        pid=pid,
        cmdline=tuple(cmdline),
        process_name=text_of("name") or "",
        exe=text_of("exe") or "",
        status=text_of("status") or "",
        username=text_of("username") or "",
        create_time=created,
        config_file=config_file,
        log_file=text_of("log_file"),
        started_at=text_of("started_at"),
        path=path,
    )


def write_pid_file(directory: Path, entry: SchedulerEntry) -> None:
    """Describe ``entry`` in ``.lynx_pid.json`` with exactly the keys it has always had."""
    data = {
        "pid": entry.pid,
        "name": entry.process_name,
        "exe": entry.exe,
        "cmdline": list(entry.cmdline),
        "status": entry.status,
        "username": entry.username,
        "create_time": entry.create_time,
        "config_file": entry.config_file,
        "log_file": entry.log_file,
        "started_at": entry.started_at,
    }
    state.write_json_atomically(directory / PID_FILE, data)


def registered(directory: Path, *, on_error: Callable[[str], None] | None = None) -> list[SchedulerEntry]:
    """Every scheduler recorded in ``directory``: the ``.lynx/`` entries, and a ``.lynx_pid.json``
    that describes none of them (written by an earlier Lynx).

    Args:
        on_error: told about an unreadable record, which is then left out; None: it raises LynxError.
    """
    entries = state.read_entries(directory, on_error=on_error)
    try:
        legacy = read_pid_file(directory / PID_FILE)
    except LynxError as error:
        if on_error is None:
            raise
        on_error(error.message)
        legacy = None
    if legacy is not None and not any(_same_record(legacy, entry) for entry in entries):
        entries.append(legacy)
    return entries


def unreadable_entry(directory: Path, name: str) -> str | None:
    """Why the entry of scheduler ``name`` cannot be read, if it exists and cannot."""
    try:
        state.read_entry(state.entry_path(directory, name))
    except FileNotFoundError:
        return None
    except LynxError as error:
        return error.message
    return None


def is_legacy(entry: SchedulerEntry) -> bool:
    return entry.path is not None and entry.path.name == PID_FILE


def _same_record(one: SchedulerEntry, other: SchedulerEntry) -> bool:
    return one.pid == other.pid and one.cmdline == other.cmdline


def kernel_start(pid: int) -> tuple[int, str] | None:
    """The process's start in clock ticks since boot and the boot's id: an identity no clock change
    can move. None where there is no ``/proc``."""
    start, boot = process_start(pid), boot_id()
    return (start, boot) if start is not None and boot is not None else None


def liveness(entry: SchedulerEntry, directory: Path) -> tuple[Liveness, Any]:
    """Whether the recorded Lynx scheduler still runs as this directory's, with its psutil process when it does."""
    import psutil

    if entry.elsewhere is not None:
        return Liveness.ELSEWHERE, None
    try:
        process = psutil.Process(entry.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return Liveness.GONE, None
        if tuple(process.cmdline()) != entry.cmdline:
            return Liveness.REUSED, None
        if entry.start_ticks is not None and entry.boot_id is not None and (now := kernel_start(entry.pid)):
            if now != (entry.start_ticks, entry.boot_id):
                return Liveness.REUSED, None
        elif entry.create_time is not None and abs(process.create_time() - entry.create_time) > CREATE_TIME_TOLERANCE:
            return Liveness.REUSED, None
        if not is_lynx_scheduler(entry.cmdline):
            return Liveness.FOREIGN, None
        if works_in(entry.pid, directory) is False:
            return Liveness.ELSEWHERE, None
        return Liveness.ALIVE, process
    except psutil.NoSuchProcess:
        return Liveness.GONE, None
    except psutil.Error:
        return Liveness.UNKNOWN, None


def works_in(pid: int, directory: Path) -> bool | None:
    """Whether process ``pid`` works in ``directory`` (the same folder, whatever its name now); None: cannot tell."""
    try:
        here = os.stat(directory)
        try:
            there = os.stat(f"/proc/{pid}/cwd")
        except FileNotFoundError:  # no /proc here
            import psutil

            there = os.stat(psutil.Process(pid).cwd())
    except (OSError, ValueError):
        return None
    except Exception:  # psutil's errors: another user's process, gone meanwhile
        return None
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def is_lynx_scheduler(cmdline: Sequence[str]) -> bool:
    """Python running Lynx's own detached start (``-c '…lynx.cli…' start … --detached``) or the
    original Lynx's ``schedular.py``."""
    if len(cmdline) >= 3 and cmdline[1] == "-c":
        return is_boot(cmdline)
    if len(cmdline) < 2 or _PYTHON.fullmatch(os.path.basename(cmdline[0])) is None:
        return False
    words = list(cmdline[1:])
    while words and words[0].startswith("-") and words[0] not in ("-c", "-m", "-"):
        # Interpreter options before the script (python -u schedular.py); -X and -W take a value.
        words = words[2:] if words[0] in ("-X", "-W") else words[1:]
    return bool(words) and os.path.basename(words[0]) in _ORIGINAL_SCRIPTS


def user_command(entry: SchedulerEntry) -> str:
    """The command line the user typed to start it; for records without it, the scheduler's own, shortened."""
    import shlex

    if entry.command_line:
        return shlex.join(entry.command_line)
    if len(entry.cmdline) > 3 and entry.cmdline[1] == "-c" and is_lynx_scheduler(entry.cmdline):
        # Lynx's boot: what follows the boot code are lynx's own arguments.
        return shlex.join(["lynx", *entry.cmdline[3:]])
    return shlex.join(entry.cmdline)


def not_signallable(entry: SchedulerEntry, process: Any) -> str | None:
    """Why a live recorded Lynx scheduler must not be signalled (it is not yours), or None."""
    import psutil

    try:
        if process.uids().real != os.getuid():
            return f"PID {entry.pid} belongs to user {process.username()}, not to you"
    except psutil.NoSuchProcess:
        pass
    except psutil.Error as error:
        return f"PID {entry.pid} cannot be checked ({error})"
    return None


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Serialize starts and stops in one directory, so two at once cannot both win."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def start_detached(
    arguments: Sequence[str],
    *,
    directory: Path,
    name: str,
    config_file: str,
    log_file: str | None,
    schedule: str | None,
    options: dict[str, Any] | None = None,
    command_line: Sequence[str] | None = None,
) -> tuple[SchedulerEntry, Any]:
    """Start ``lynx <arguments>`` as a detached process named ``name`` and record it.

    It runs with the interpreter running now, in its own session, with no terminal on its
    standard streams, so closing the terminal does not end it. It waits for its record to be
    written; if that fails it is ended before it has run anything. Its standard output and error
    stay a pipe to this process until it is ready (see :func:`lynx.boot.wait_until_ready`).

    Returns:
        The record, and the started process (a Popen).

    Raises:
        LynxError: a scheduler of that name still runs here, or the record cannot be written.
    """
    with directory_lock(directory):
        state.check_writable(directory)
        # Records that cannot be read stand in the way only of their own name.
        problem = unreadable_entry(directory, name)
        if problem is not None:
            raise LynxError(problem)
        for entry in registered(directory, on_error=lambda message: None):
            if liveness(entry, directory)[0] not in (Liveness.ALIVE, Liveness.UNKNOWN):
                continue
            if is_legacy(entry):
                raise LynxError(
                    f"a background Lynx started by an earlier Lynx is running here (PID {entry.pid}); "
                    "stop it first with 'lynx stop'"
                )
            if entry.name == name:
                raise LynxError(
                    f"a background Lynx named '{name}' is already running here (PID {entry.pid}); "
                    f"stop it with 'lynx stop {name}', or start this one with another --name"
                )
        popen = subprocess.Popen(
            boot_command(arguments),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )
        assert popen.stdin is not None
        written: Path | None = None
        try:
            entry = _describe(
                popen.pid,
                name,
                config_file=config_file,
                log_file=log_file,
                schedule=schedule,
                directory=state.identity(directory),
                options=options,
                command_line=tuple(command_line) if command_line is not None else None,
            )
            written = state.write_entry(entry, directory)
            write_pid_file(directory, entry)
            state.remove_tombstone(directory, name)
            popen.stdin.write(b"go")
            popen.stdin.close()
        except BaseException as error:
            popen.kill()
            popen.wait()
            if written is not None:
                with contextlib.suppress(OSError):
                    written.unlink()
            if isinstance(error, OSError):
                raise LynxError(
                    f"cannot record the background Lynx in {directory}: {error.strerror or error}; "
                    "it was ended before it ran anything"
                ) from None
            raise
    return replace(entry, path=written), popen


def unstarted(directory: Path, entry: SchedulerEntry) -> None:
    """Remove the record of a scheduler that ended before it was ready (it ran nothing)."""
    with directory_lock(directory), contextlib.suppress(OSError, LynxError):
        current = state.read_entry(state.entry_path(directory, entry.name))
        if current.pid == entry.pid and current.cmdline == entry.cmdline:
            state.remove_entry(current)
            mirrored = read_pid_file(directory / PID_FILE)
            if mirrored is not None and _same_record(mirrored, entry):
                (directory / PID_FILE).unlink()


def _describe(pid: int, name: str, **fields: Any) -> SchedulerEntry:
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            ticks, boot_id = kernel_start(pid) or (None, None)
            return SchedulerEntry(
                name=name,
                pid=pid,
                cmdline=tuple(process.cmdline()),
                process_name=process.name(),
                exe=process.exe(),
                status=process.status(),
                username=process.username(),
                create_time=process.create_time(),
                start_ticks=ticks,
                boot_id=boot_id,
                started_at=state.iso(datetime.now()),
                **fields,
            )
    except psutil.Error as error:
        raise OSError(f"the new process cannot be described: {error}") from None


def forget(directory: Path, entry: SchedulerEntry, *, stopped: bool = True) -> None:
    """Remove ``entry``'s record; ``.lynx_pid.json`` then describes the newest scheduler left, if any.

    Args:
        stopped: leave a tombstone (``.lynx/stopped/NAME.json``): it was stopped on purpose, and
            ``lynx logs NAME`` still finds its log. Not for records that describe no scheduler of
            this directory.

    Raises:
        LynxError: a record cannot be removed or rewritten (a read-only directory).
    """
    try:
        if is_legacy(entry):
            with contextlib.suppress(FileNotFoundError):
                (directory / PID_FILE).unlink()
            return
        if stopped:
            state.write_tombstone(replace(entry, elsewhere=None), directory)
        state.remove_entry(entry)
        try:
            mirrored = read_pid_file(directory / PID_FILE)
        except LynxError:
            return
        if mirrored is None or not _same_record(mirrored, entry):
            return
        entries = state.read_entries(directory, on_error=lambda message: None)
        left = [each for each in entries if liveness(each, directory)[0] is Liveness.ALIVE]
        if left:
            write_pid_file(directory, max(left, key=lambda each: (each.started_at or "", each.start_ticks or 0)))
        else:
            with contextlib.suppress(FileNotFoundError):
                (directory / PID_FILE).unlink()
    except OSError as error:
        raise LynxError(
            f"cannot remove the record of '{entry.name}' in {directory}: {error.strerror or error}"
        ) from None


def select(entries: list[SchedulerEntry], name: str | None) -> list[SchedulerEntry]:
    """The entries of scheduler ``name`` (all of them when None).

    Raises:
        LynxError: none has that name.
    """
    if name is None:
        return entries
    chosen = [entry for entry in entries if entry.name == name]
    if not chosen:
        recorded = f"recorded here: {', '.join(e.name for e in entries)}" if entries else "none is recorded here"
        raise LynxError(f"no background Lynx named '{name}' here; {recorded}")
    return chosen


def pid_now_taken(pid: int) -> str | None:
    """A short description of whoever holds ``pid`` now, if anyone."""
    import psutil

    try:
        process = psutil.Process(pid)
        return f"{process.name()}, user {process.username()}"
    except psutil.Error:
        return None


def stop_grace() -> float:
    """Seconds a scheduler gets after SIGTERM before its tree is killed (imported late: status need not load it)."""
    from lynx.ending import TERMINATE_GRACE

    return TERMINATE_GRACE + STOP_EXTRA_GRACE


def end_trees(processes: Sequence[Any]) -> int:
    """SIGTERM each scheduler, which ends its own step; then SIGKILL whatever of their trees outlives the grace.

    Returns:
        How many processes had to be killed.
    """
    import psutil

    tree = []
    for process in processes:
        try:
            tree += [process, *process.children(recursive=True)]
        except psutil.Error:
            tree.append(process)
        with contextlib.suppress(psutil.Error):
            process.terminate()
    psutil.wait_procs(list(processes), timeout=stop_grace())
    leftovers = [each for each in tree if each.is_running()]
    for each in leftovers:
        with contextlib.suppress(psutil.Error):
            each.kill()
    psutil.wait_procs(leftovers, timeout=5)
    return len(leftovers)
