"""Where messages and step output go: the screen, and optionally a rotating log file."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, BinaryIO, TextIO

from lynx.errors import ConfigError

LOGGER = "lynx"
CONSOLE_HANDLER = "lynx-console"
FILE_HANDLER = "lynx-file"
# A log line never grows beyond this: longer runs without a newline are split here.
MAX_LOG_LINE = 64 * 1024


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
        prefix = _line_prefix(record.created, record.levelname)
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
    pass


def _line_prefix(when: float, level: str) -> str:
    """What starts every line of the log file: ``2026-11-21 22:31:16,327 - INFO - ``."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    return f"{stamp},{int((when - int(when)) * 1000):03d} - {level} - "


def _log_file_handler(path: str, max_bytes: int, backup_count: int) -> logging.Handler:
    # logging.handlers drags in socket, pickle and more: only runs with a log file pay for it.
    from logging.handlers import RotatingFileHandler

    class LogFileHandler(_ReportOnce, RotatingFileHandler):
        """RotatingFileHandler that writes each record with one unbuffered system call.

        The standard one formats every record twice (once to decide on rotation) and goes
        through a text buffer; with megabytes of step output per second that doubles Lynx's
        cost. One write per record also means a killed Lynx never leaves half a record.
        """

        what = f"the log file {path}"
        size = 0

        def _open(self) -> Any:
            stream = open(self.baseFilename, "ab", buffering=0)  # noqa: SIM115 - the handler owns it
            self.size = os.fstat(stream.fileno()).st_size
            return stream

        @property
        def rotating(self) -> bool:
            # As in the standard handler, a backup count of 0 means the file never rotates.
            return self.maxBytes > 0 and self.backupCount > 0

        def emit(self, record: logging.LogRecord) -> None:
            try:
                self._write((self.format(record) + "\n").encode("utf-8", "replace"))
            except Exception:
                self.handleError(record)

        def write_output(self, lines: bytes) -> None:
            """Log a step's output: ``\n``-separated UTF-8 lines, each prefixed like a record's."""
            prefix = _line_prefix(time.time(), "INFO").encode()
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
            size = sum(len(part) for part in parts)
            if self.rotating and self.size and self.size + size > self.maxBytes:
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            written = os.writev(self.stream.fileno(), parts)
            if written < size:  # a short write: finish it, or fail with the reason (a full disk)
                self.stream.write(b"".join(parts)[written:])
            self.size += size

    return LogFileHandler(path, mode="a", maxBytes=max_bytes, backupCount=backup_count)


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


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


class OutputRelay:
    """Pass a step's output on as it arrives: raw bytes to the screen, whole lines to the log file.

    The screen gets the bytes untouched (so ``\r`` progress bars stay progress bars); the log
    gets complete lines, split at ``\n`` or ``\r``, as valid UTF-8 (bad bytes become U+FFFD),
    and at most MAX_LOG_LINE long. Memory stays bounded by one chunk plus one partial line.
    Output is handled a chunk at a time, never a line at a time: it can be hundreds of MB.
    """

    def __init__(self, screen: BinaryIO | None, log_file: Any = None) -> None:
        """Args:
        screen: where the raw bytes go (None: nowhere).
        log_file: the handler returned by setup_logging (None: no log file).
        """
        self.screen = screen
        self.screen_fd = _fileno(screen) if screen is not None else None
        self.log_file = log_file
        self.partial = b""
        self.screen_mid_line = False

    def write(self, chunk: bytes) -> None:
        if self.screen is not None:
            self._to_screen(chunk)
        if self.log_file is not None:
            self._to_log(chunk)

    def flush(self) -> None:
        """End the step's output: finish an unfinished last line on the screen and in the log."""
        if self.screen is not None and self.screen_mid_line:
            self._to_screen(b"\n")
        if self.log_file is not None and self.partial:
            last = self.partial[:-1] if self.partial.endswith(b"\r") else self.partial
            self.partial = b""
            self._emit(last)

    def _to_screen(self, chunk: bytes) -> None:
        assert self.screen is not None
        try:
            if self.screen_fd is None:
                self.screen.write(chunk)
                self.screen.flush()
            else:
                # Straight to the file descriptor: no copy into a buffer, one system call.
                view = memoryview(chunk)
                while view:
                    view = view[os.write(self.screen_fd, view) :]
            self.screen_mid_line = not chunk.endswith(b"\n")
        except (OSError, ValueError) as error:
            # Said once, through the logger: the log file keeps it, and the console handler
            # (which cannot write either) reports the broken screen on stderr, once.
            self.screen = None
            get_logger().warning(f"Cannot write step output to the screen any more ({error}); the run goes on.")

    def _to_log(self, chunk: bytes) -> None:
        data = self.partial + chunk if self.partial else chunk
        # A trailing \r may be the first half of \r\n: keep it until the next chunk says.
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
        if cut < 0:
            self.partial = data
        else:
            self.partial = data[cut + 1 :]
            # The separator ending the block is left out: the log file adds its own.
            stop = cut - 1 if data[cut] == 0x0A and cut > 0 and data[cut - 1] == 0x0D else cut
            self._emit(data[:stop])
        while len(self.partial) >= MAX_LOG_LINE:
            self._emit(self.partial[:MAX_LOG_LINE])
            self.partial = self.partial[MAX_LOG_LINE:]

    def _emit(self, block: bytes) -> None:
        """Log ``block``: lines without their final separator."""
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            block = block.decode("utf-8", "replace").encode("utf-8")
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self.log_file.write_output(block)


def color_wanted(stream: Any, environ: dict[str, str]) -> bool:
    """Color only on a terminal, and never with NO_COLOR set or TERM=dumb."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in environ and environ.get("TERM") != "dumb"


def _fileno(stream: Any) -> int | None:
    try:
        stream.flush()
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
