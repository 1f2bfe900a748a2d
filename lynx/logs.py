"""Where Lynx's messages go: the screen, and optionally a rotating log file (a step's output is passed on by
:mod:`lynx.relay`, through the same log file)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any, Mapping, TextIO

from lynx.errors import ConfigError

LOGGER = "lynx"
CONSOLE_HANDLER = "lynx-console"
FILE_HANDLER = "lynx-file"


def paint(text: str, color: str | None, enabled: bool) -> str:
    """``text`` in ``color`` when color is on (termcolor is imported only then)."""
    if not (enabled and color):
        return text
    from termcolor import colored

    return colored(text, color, force_color=True)


class ConsoleFormatter(logging.Formatter):
    """The bare message, colored by the record's ``color`` attribute when color is on."""

    def __init__(self, color: bool) -> None:
        super().__init__("%(message)s")
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        return paint(super().format(record), getattr(record, "color", None), self.color)


class FileFormatter(logging.Formatter):
    """Timestamp and level on every line, so a multi-line message stays greppable line by line."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = line_prefix(record.created, record.levelname)
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return prefix + text.replace("\n", "\n" + prefix)


class _ReportOnce:
    """Report a handler's write failure once on stderr instead of a traceback per record."""

    reported = False
    what = "the screen"

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if self.reported:
            return
        self.reported = True
        error = sys.exc_info()[1]
        try:
            sys.stderr.write(f"Lynx: cannot write to {self.what} ({error}); the run goes on.\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


class ConsoleHandler(_ReportOnce, logging.StreamHandler):  # type: ignore[type-arg]
    """The screen: every record except those meant for the log file only (``extra={"file_only": True}``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False) and bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
            flush_waiting(self.stream)
            fd = fileno_of(self.stream)
            if fd is None:
                self.stream.write(text)
                self.stream.flush()
            else:
                # Straight to the terminal, waiting for it if a step made it non-blocking.
                encoding = getattr(self.stream, "encoding", None) or "utf-8"
                write_waiting(fd, text.encode(encoding, getattr(self.stream, "errors", None) or "strict"))
        except Exception:
            self.handleError(record)


def line_prefix(when: float, level: str) -> str:
    """What starts every line of the log file: ``2026-11-21 22:31:16,327 - INFO - ``."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    return f"{stamp},{int((when - int(when)) * 1000):03d} - {level} - "


def _log_file_handler(path: str, max_bytes: int, backup_count: int) -> logging.Handler:
    # logging.handlers drags in socket, pickle and more: only runs with a log file pay for it.
    import fcntl
    import stat
    from logging.handlers import RotatingFileHandler

    class LogFileHandler(_ReportOnce, RotatingFileHandler):
        """RotatingFileHandler that writes each record with one unbuffered system call.

        The standard one formats every record twice (once to decide on rotation) and goes
        through a text buffer; with megabytes of step output per second that doubles Lynx's
        cost. One write per record also means a killed Lynx never leaves half a record.

        Only a regular file rotates (the standard handler's bpo-45401 check, which this one
        bypasses, done once at open). Several Lynx may share the file: a write that may rotate
        holds an flock on it, so the size seen is the file's, and one rotation happens at a time.
        """

        what = f"the log file {path}"
        # A binary file opened unbuffered (_open), where the standard handler keeps a text one.
        stream: Any
        size = 0
        # Only a regular file (not a symlink, FIFO, terminal or device) is ever renamed.
        regular = False
        locking = True

        def _open(self) -> Any:
            stream = open(self.baseFilename, "ab", buffering=0)  # noqa: SIM115 - the handler owns it
            status = os.fstat(stream.fileno())
            self.size = status.st_size
            self.regular = stat.S_ISREG(status.st_mode) and not os.path.islink(self.baseFilename)
            return stream

        @property
        def rotating(self) -> bool:
            # As in the standard handler, a backup count of 0 means the file never rotates.
            return self.maxBytes > 0 and self.backupCount > 0 and self.regular

        def emit(self, record: logging.LogRecord) -> None:
            try:
                self._write((self.format(record) + "\n").encode("utf-8", "replace"))
            except Exception:
                self.handleError(record)

        def write_output(self, lines: bytes) -> None:
            """Log a step's output: ``\n``-separated UTF-8 lines, each prefixed like a record's."""
            prefix = line_prefix(time.time(), "INFO").encode()
            body = lines.replace(b"\n", b"\n" + prefix)
            with self.lock:  # type: ignore[union-attr]
                try:
                    middle = lines.rfind(b"\n", 0, len(lines) // 2 + 1)
                    if self.rotating and len(prefix) + len(body) > self.maxBytes // 2 and middle > 0:
                        # A small --log-size: halve the block at a line end, so rotation can keep
                        # each file near the size (the lock is reentrant).
                        self.write_output(lines[:middle])
                        self.write_output(lines[middle + 1 :])
                        return
                    self._write(prefix, body, b"\n")
                except Exception:
                    self.handleError(logging.makeLogRecord({"msg": "step output"}))

        def _write(self, *parts: bytes) -> None:
            """One system call per record (writev: no copy to glue the parts together)."""
            if self.stream is None:
                self.stream = self._open()
            if not self.rotating:
                self._append(parts)
                return
            # Another Lynx may write and rotate the same file: decide and rotate under its lock.
            self._lock_current_file()
            try:
                size = sum(len(part) for part in parts)
                while self.rotating and self.size and self.size + size > self.maxBytes:
                    self.doRollover()
                self._append(parts)
            finally:
                if self.stream is not None:
                    self._flock(fcntl.LOCK_UN)

        def _flock(self, operation: int) -> None:
            # A file system without flock (some network and FUSE mounts) still gets its log,
            # as before sharing was made safe.
            if self.locking:
                try:
                    fcntl.flock(self.stream.fileno(), operation)
                except OSError:
                    self.locking = False

        def _append(self, parts: tuple[bytes, ...]) -> None:
            size = sum(len(part) for part in parts)
            written = os.writev(self.stream.fileno(), parts)
            if written < size:  # a short write: finish it, or fail with the reason (a full disk)
                self.stream.write(b"".join(parts)[written:])
            self.size += size

        def _lock_current_file(self) -> None:
            """Hold the lock of the file now at the log's path, reopening it if another rotated it away."""
            while True:
                self._flock(fcntl.LOCK_EX)
                status = os.fstat(self.stream.fileno())
                try:
                    current = os.stat(self.baseFilename)
                    renamed = (current.st_dev, current.st_ino) != (status.st_dev, status.st_ino)
                except FileNotFoundError:
                    renamed = True
                if not renamed:
                    self.size = status.st_size
                    return
                self.stream.close()  # releases the lock
                self.stream = self._open()
                if not self.rotating:  # replaced by a symlink or a FIFO: never rotated
                    return

        def doRollover(self) -> None:  # noqa: N802 - logging's name
            """Shift ``log.N`` to ``log.N+1`` and the log to ``log.1``, holding the old file's lock throughout.

            The standard handler closes the file first, which would release the lock while the
            names are still moving. Returns holding the new file's lock.
            """
            base = self.baseFilename
            for number in range(self.backupCount - 1, 0, -1):
                if os.path.exists(f"{base}.{number}"):
                    _rename(f"{base}.{number}", f"{base}.{number + 1}")
            _rename(base, f"{base}.1")
            old, self.stream = self.stream, self._open()
            # The new file's lock before the old one's is let go: whoever waited for the old
            # one then finds the new one taken until this write is done. Locks are only ever
            # waited for from an older file to a newer one, so two Lynx cannot deadlock.
            self._lock_current_file()
            old.close()

    handler = LogFileHandler(path, mode="a", maxBytes=max_bytes, backupCount=backup_count)
    # logging makes the name absolute; a relative one (Lynx never changes its directory) keeps
    # naming the file in the project folder when the folder is renamed, also when it rotates.
    handler.baseFilename = os.fspath(path)
    return handler


def _rename(source: str, target: str) -> None:
    """Rename, deleting the target first: ext4 flushes a file renamed over another to disk
    (auto_da_alloc), which would cost each rotation a synchronous write of the whole file."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(target)
    os.rename(source, target)


def setup_logging(
    *,
    level: int,
    color: bool,
    screen: TextIO | None,
    log_file: str | None,
    log_size: int,
    backup_count: int,
) -> Any:
    """Configure the ``lynx`` logger; calling it again replaces the handlers instead of stacking them.

    Args:
        level: what reaches the screen.
        color: color the screen's progress lines.
        screen: the stream for messages, or None (background).
        log_file: also write everything to this rotating file.
        log_size: bytes before the file rotates (0: never).
        backup_count: rotated files kept.

    Returns:
        The log file's handler (its ``write_output`` takes step output), or None.

    Raises:
        ConfigError: the log file cannot be opened.
    """
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if handler.get_name() in (CONSOLE_HANDLER, FILE_HANDLER):
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    # APScheduler's own chatter would reach stderr through logging's last resort; Lynx says
    # what matters (skipped and missed runs) itself.
    logging.getLogger("apscheduler").addHandler(logging.NullHandler())
    logging.getLogger("apscheduler").propagate = False

    if screen is not None:
        console = ConsoleHandler(screen)
        console.set_name(CONSOLE_HANDLER)
        console.setLevel(level)
        console.setFormatter(ConsoleFormatter(color))
        logger.addHandler(console)
    if not log_file:
        return None
    try:
        file_handler = _log_file_handler(log_file, log_size, backup_count)
    except OSError as error:
        raise ConfigError(f"cannot open the log file {log_file}: {error.strerror or error}") from None
    file_handler.set_name(FILE_HANDLER)
    file_handler.setLevel(min(level, logging.INFO))
    file_handler.setFormatter(FileFormatter())
    logger.addHandler(file_handler)
    return file_handler


def check_log_file(log_file: str, protected: Mapping[str, str]) -> None:
    """Refuse a log file that is one of the ``protected`` files (path: what it is).

    Appending log lines to the config or a step's script would corrupt it, and rotation would
    rename it away. The same file under another name (a symlink, a hard link) counts too.

    Raises:
        ConfigError: it is.
    """
    try:
        log = os.stat(log_file)
    except (OSError, ValueError):
        return  # not there yet, so it is none of them (opening it says what else is wrong)
    for path, what in protected.items():
        try:
            other = os.stat(path)
        except (OSError, ValueError):
            continue
        if (log.st_dev, log.st_ino) == (other.st_dev, other.st_ino):
            raise ConfigError(f"the log file {log_file} is {what}; Lynx will not write its log into it")


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


def color_wanted(stream: Any, environ: Mapping[str, str]) -> bool:
    """Color on a terminal unless TERM=dumb; a non-empty NO_COLOR turns it off, a non-empty FORCE_COLOR on.

    As in https://no-color.org and https://force-color.org (an empty value counts as unset);
    with both set, NO_COLOR wins, as in Python's own REPL.
    """
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and environ.get("TERM") != "dumb"


def write_waiting(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``; a terminal that a step set non-blocking is waited for.

    Terminal flags are shared by everything attached to it, so a step that sets O_NONBLOCK on
    its input sets it on Lynx's screen too; giving up on EAGAIN would silently drop output.
    """
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            _wait_writable(fd)


def flush_waiting(stream: Any) -> None:
    """``stream.flush()``, waiting for a non-blocking terminal instead of failing with EAGAIN."""
    while True:
        try:
            stream.flush()
            return
        except BlockingIOError:
            _wait_writable(stream.fileno())


def _wait_writable(fd: int) -> None:
    import select

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()


def fileno_of(stream: Any) -> int | None:
    try:
        stream.flush()
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
