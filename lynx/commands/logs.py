"""``lynx logs [NAME] [-n LINES] [-f]``: the end of a background scheduler's log file, and what follows."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path
from typing import BinaryIO, Callable, TextIO

from lynx import daemon, state
from lynx.errors import EXIT_OK, LynxError
from lynx.state import SchedulerEntry
from lynx.statefiles import describe_kind

BLOCK = 64 * 1024
# How often -f looks for new lines and for a rotation: about what 'tail -F' does.
FOLLOW_INTERVAL = 0.2


def logs(
    name: str | None = None,
    *,
    lines: int = 20,
    follow: bool = False,
    stdout: BinaryIO | None = None,
    stderr: TextIO = sys.stderr,
    directory: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run ``lynx logs`` and return its exit code."""
    directory = directory or Path.cwd()
    out = stdout or sys.stdout.buffer
    entry = _chosen(name, directory, stderr)
    if not entry.log_file and daemon.is_legacy(entry):
        raise LynxError(f"{daemon.PID_FILE} (written by an earlier Lynx) does not say where its scheduler logs")
    if not entry.log_file:
        raise LynxError(f"the background Lynx '{entry.name}' was started without a log file: its output is discarded")
    path = entry.log_file
    _check_readable_log(entry.name, path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - kept open while following
    except OSError as error:
        if not follow:
            raise LynxError(f"cannot read the log file {path}: {error.strerror or error}") from None
        handle = None
    try:
        if handle is not None:
            out.write(last_lines(handle, lines))
            out.flush()
        if follow:
            _follow(path, handle, out, sleep)
    except KeyboardInterrupt:
        pass
    finally:
        if handle is not None:
            handle.close()
    return EXIT_OK


def _chosen(name: str | None, directory: Path, stderr: TextIO) -> SchedulerEntry:
    """The scheduler whose log to show: the one recorded (named, or the only one), else a stopped one of that name.

    Raises:
        LynxError: none, or several and none named.
    """
    entries = [
        entry
        for entry in daemon.registered(directory, on_error=lambda message: _warn(stderr, message))
        # A record copied from another directory names that directory's log, not this one's.
        if entry.elsewhere is None
    ]
    if name is not None and not any(entry.name == name for entry in entries):
        stopped = state.read_tombstone(directory, name)
        if stopped is not None:
            return stopped
    if name is None and not entries:
        stopped_here = state.stopped_names(directory)
        hint = (
            f"; 'lynx logs NAME' shows the log of one stopped here ({', '.join(stopped_here)})" if stopped_here else ""
        )
        raise LynxError(f"no background Lynx is recorded here; start one with 'lynx start --background'{hint}")
    entries = daemon.select(entries, name)
    if len(entries) > 1:
        names = ", ".join(entry.name for entry in entries)
        raise LynxError(f"{len(entries)} background Lynx are recorded here ({names}): name one ('lynx logs NAME')")
    return entries[0]


def _check_readable_log(name: str, path: str) -> None:
    """Only a regular file has an end to show: a FIFO's lines go to whoever reads them first, a device has none.

    Raises:
        LynxError: the log file is no regular file.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # not there (yet): said when it is opened
    if not stat.S_ISREG(mode):
        also = " (its lines go to whoever reads it)" if stat.S_ISFIFO(mode) else ""
        raise LynxError(f"the log file {path} of '{name}' is {describe_kind(mode)}: it has no end to show{also}")


def last_lines(handle: BinaryIO, count: int) -> bytes:
    """The last ``count`` lines of an open file, read backwards in blocks; leaves it at its end."""
    end = handle.seek(0, os.SEEK_END)
    if count <= 0:
        return b""
    position, data = end, b""
    # One more newline than lines wanted: the file's own last newline ends the last line.
    while position > 0 and data.count(b"\n") <= count:
        step = min(BLOCK, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
    handle.seek(end)
    tail = data.split(b"\n")
    if tail and tail[-1] == b"":
        tail.pop()
        return b"\n".join(tail[-count:]) + b"\n"
    return b"\n".join(tail[-count:])


def _follow(path: str, handle: BinaryIO | None, out: BinaryIO, sleep: Callable[[float], None]) -> None:
    """Print what is appended, and move on to the new file when the log rotates (renamed or truncated)."""
    while True:
        if handle is not None:
            chunk = handle.read(BLOCK)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not _replaced(path, handle):
                sleep(FOLLOW_INTERVAL)
                continue
            # Rotated: finish the old file (a last write may have come just before the rename),
            # then start the new one at its start.
            rest = handle.read()
            if rest:
                out.write(rest)
                out.flush()
            handle.close()
            handle = None
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device in its place: no file to follow
                raise OSError
            handle = open(path, "rb")  # noqa: SIM115 - kept open while following
        except OSError:
            sleep(FOLLOW_INTERVAL)


def _replaced(path: str, handle: BinaryIO) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False  # renamed and not yet recreated: keep reading the old one
    mine = os.fstat(handle.fileno())
    if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
        return True
    if now.st_size < handle.tell():  # truncated in place
        handle.seek(0)
    return False


def _warn(stderr: TextIO, message: str) -> None:
    """A record that cannot be read is named and left out; it must not hide the others."""
    stderr.write(f"Warning: {message}\n")
