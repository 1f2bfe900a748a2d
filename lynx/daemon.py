"""The background scheduler: start it detached, record it in ``.lynx_pid.json``, stop it safely."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lynx.errors import EXIT_FAILED, EXIT_OK, LynxError
from lynx.process import TERMINATE_GRACE

PID_FILE = ".lynx_pid.json"
# The scheduler gets this long after SIGTERM to end its step (which itself gets
# TERMINATE_GRACE before SIGKILL) and exit; then whatever is left of its tree is killed.
STOP_GRACE = TERMINATE_GRACE + 5.0
# psutil derives create times from the boot time, which moves a little when the clock is set;
# together with the command line, a second's tolerance still tells a reused PID apart.
CREATE_TIME_TOLERANCE = 1.0
_UNTOUCHED = "nothing was signalled. Remove the file if no Lynx runs from here."


@dataclass(frozen=True)
class PidRecord:
    """What ``.lynx_pid.json`` holds about the background scheduler."""

    pid: int
    name: str
    exe: str
    cmdline: list[str]
    status: str
    username: str
    create_time: float
    config_file: str
    log_file: str | None
    started_at: str

    def describe(self) -> str:
        return (
            f"PID {self.pid} ({self.name}, user {self.username}, started {self.started_at})\n"
            f"  command: {' '.join(self.cmdline)}\n"
            f"  config: {self.config_file}; log: {self.log_file or 'discarded'}"
        )


def read_pid_file(path: Path) -> PidRecord | None:
    """The record, or None if there is no file.

    Raises:
        LynxError: the file is unreadable, not JSON, or not a pid record.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise LynxError(f"{path}: cannot read it: {error}") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise LynxError(f"{path} is not valid JSON ({error}); {_UNTOUCHED}") from None
    fields = PidRecord.__dataclass_fields__
    if not isinstance(data, dict) or set(data) != set(fields):
        raise LynxError(f"{path} is not a Lynx pid file; {_UNTOUCHED}")
    checks = {"pid": int, "create_time": (int, float), "cmdline": list}
    for key, kind in checks.items():
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise LynxError(f"{path}: '{key}' has the wrong type; {_UNTOUCHED}")
    if data["pid"] <= 0:
        raise LynxError(f"{path}: 'pid' must be positive; {_UNTOUCHED}")
    return PidRecord(**data)


def write_pid_file(path: Path, record: PidRecord) -> None:
    """Replace the file atomically (temp file + os.replace), readable by all, writable by the owner."""
    fd, temp = tempfile.mkstemp(prefix=".lynx_pid.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(record), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def live_process(record: PidRecord) -> Any:
    """The recorded process if it still runs; None if it is gone or its PID now belongs to another process."""
    import psutil

    try:
        process = psutil.Process(record.pid)
        same = (
            abs(process.create_time() - record.create_time) <= CREATE_TIME_TOLERANCE
            and process.cmdline() == record.cmdline
        )
        if same and process.status() != psutil.STATUS_ZOMBIE:
            return process
    except psutil.Error:
        pass
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
    config_file: str,
    log_file: str | None,
) -> PidRecord:
    """Start ``lynx <arguments>`` as a detached process and record it.

    It runs with the interpreter running now, in its own session, with no terminal on its
    standard streams, so closing the terminal does not end it.

    Raises:
        LynxError: a scheduler recorded here is still running.
    """
    import psutil

    pid_path = directory / PID_FILE
    with directory_lock(directory):
        existing = read_pid_file(pid_path)
        if existing is not None and live_process(existing) is not None:
            raise LynxError(
                f"a background Lynx is already running here (PID {existing.pid}); stop it first with 'lynx stop'"
            )
        root = str(Path(__file__).resolve().parent.parent)
        boot = f"import sys; sys.path.insert(0, {root!r}); from lynx.cli import main; main()"
        popen = subprocess.Popen(
            [sys.executable, "-c", boot, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=directory,
            start_new_session=True,
        )
        process = psutil.Process(popen.pid)
        with process.oneshot():
            record = PidRecord(
                pid=process.pid,
                name=process.name(),
                exe=process.exe(),
                cmdline=process.cmdline(),
                status=process.status(),
                username=process.username(),
                create_time=process.create_time(),
                config_file=config_file,
                log_file=log_file,
                started_at=datetime.now().astimezone().isoformat(timespec="seconds"),
            )
        write_pid_file(pid_path, record)
    return record


def stop_background(
    directory: Path,
    *,
    confirm: Callable[[str], bool | None],
    say: Callable[[str], None],
) -> int:
    """Stop the scheduler recorded in ``directory``; returns the exit code.

    Args:
        directory: where ``.lynx_pid.json`` is.
        confirm: asked before anything is signalled; False or None (end of input) means no.
        say: prints a line for the user.
    """
    import psutil

    pid_path = directory / PID_FILE
    with directory_lock(directory):
        record = read_pid_file(pid_path)
        if record is None:
            raise LynxError(f"no background Lynx to stop: there is no {PID_FILE} in {directory}")
        process = live_process(record)
        if process is None:
            return _remove_stale(pid_path, record, say)
    me = psutil.Process().username()
    try:
        owner = process.username()
    except psutil.NoSuchProcess:
        owner = me
    if owner != me:
        raise LynxError(f"PID {record.pid} belongs to user {owner}, not {me}; it was not signalled.")
    say(f"Background Lynx: {record.describe()}")
    # Asked without holding the lock: a slow answer must not block starts and stops here.
    if not confirm(f"Are you sure you want to terminate the process (PID {record.pid})? (y/n)"):
        say("Not stopped.")
        return EXIT_FAILED
    with directory_lock(directory):
        if read_pid_file(pid_path) != record:
            raise LynxError(f"{PID_FILE} changed while you were asked; nothing was signalled. Run 'lynx stop' again.")
        if live_process(record) is None:
            return _remove_stale(pid_path, record, say)
        say("Terminating process ...")
        killed = _end_tree(process)
        pid_path.unlink()
    if killed:
        say(f"Had to kill (SIGKILL) {killed} process(es) that did not exit within {STOP_GRACE:g} s of SIGTERM.")
    say(f"Stopped the background Lynx (PID {record.pid}).")
    return EXIT_OK


def _remove_stale(pid_path: Path, record: PidRecord, say: Callable[[str], None]) -> int:
    """The recorded scheduler has ended: remove its record, and never signal whoever has its PID now."""
    stale = _pid_now_taken(record.pid)
    pid_path.unlink()
    if stale:
        raise LynxError(
            f"PID {record.pid} now belongs to another process ({stale}); it was not signalled. "
            f"The recorded Lynx has ended; removed the stale {PID_FILE}."
        )
    say(f"The Lynx process (PID {record.pid}) has already ended; removed the stale {PID_FILE}.")
    return EXIT_OK


def _pid_now_taken(pid: int) -> str | None:
    """A short description of whoever holds ``pid`` now, if anyone."""
    import psutil

    try:
        process = psutil.Process(pid)
        return f"{process.name()}, user {process.username()}"
    except psutil.Error:
        return None


def _end_tree(process: Any) -> int:
    """SIGTERM the scheduler, which ends its own step; then SIGKILL whatever of its tree outlives the grace."""
    import psutil

    try:
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:
        tree = [process]
    with contextlib.suppress(psutil.Error):
        process.terminate()
    psutil.wait_procs([process], timeout=STOP_GRACE)
    leftovers = [each for each in tree if each.is_running()]
    for each in leftovers:
        with contextlib.suppress(psutil.Error):
            each.kill()
    psutil.wait_procs(leftovers, timeout=5)
    return len(leftovers)
