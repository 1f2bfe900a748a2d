"""Where messages and step output go: the screen, and optionally a rotating log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, BinaryIO, TextIO

from lynx.errors import ConfigError

LOGGER = "lynx"
OUTPUT_LOGGER = "lynx.output"
CONSOLE_HANDLER = "lynx-console"
FILE_HANDLER = "lynx-file"
FILE_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
# A log line never grows beyond this: longer runs without a newline are split here.
MAX_LOG_LINE = 64 * 1024
# The longest timestamp-and-level prefix the file formatter puts before each line.
LINE_PREFIX = len("2026-01-01 00:00:00,000 - CRITICAL - ")


class ConsoleFormatter(logging.Formatter):
    """The bare message, colored by the record's ``color`` attribute when color is on."""

    def __init__(self, color: bool) -> None:
        super().__init__("%(message)s")
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        color = getattr(record, "color", None)
        if self.color and color:
            from termcolor import colored

            return colored(message, color, force_color=True)
        return message


class FileFormatter(logging.Formatter):
    """Timestamp and level on every line, so a multi-line message stays greppable line by line."""

    def __init__(self) -> None:
        super().__init__(FILE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if "\n" not in record.getMessage():
            return line
        prefix = line[: len(line) - len(record.getMessage())]
        return line.replace("\n", "\n" + prefix)


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


def _log_file_handler(path: str, max_bytes: int, backup_count: int) -> logging.Handler:
    # logging.handlers drags in socket, pickle and more: only runs with a log file pay for it.
    from logging.handlers import RotatingFileHandler

    class LogFileHandler(_ReportOnce, RotatingFileHandler):
        what = f"the log file {path}"

    return LogFileHandler(path, mode="a", maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")


def setup_logging(
    *,
    level: int,
    color: bool,
    screen: TextIO | None,
    log_file: str | None,
    log_size: int,
    backup_count: int,
) -> None:
    """Configure the ``lynx`` loggers; calling it again replaces the handlers instead of stacking them.

    Args:
        level: what reaches the screen.
        color: color the screen's progress lines.
        screen: the stream for messages, or None (background).
        log_file: also write everything to this rotating file.
        log_size: bytes before the file rotates (0: never).
        backup_count: rotated files kept.

    Raises:
        ConfigError: the log file cannot be opened.
    """
    logger = logging.getLogger(LOGGER)
    output_logger = logging.getLogger(OUTPUT_LOGGER)
    for each in (logger, output_logger):
        for handler in list(each.handlers):
            if handler.get_name() in (CONSOLE_HANDLER, FILE_HANDLER):
                each.removeHandler(handler)
                if each is logger:
                    handler.close()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    output_logger.setLevel(logging.DEBUG)
    output_logger.propagate = False
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
    if log_file:
        try:
            file_handler = _log_file_handler(log_file, log_size, backup_count)
        except OSError as error:
            raise ConfigError(f"cannot open the log file {log_file}: {error.strerror or error}") from None
        file_handler.set_name(FILE_HANDLER)
        file_handler.setLevel(min(level, logging.INFO))
        file_handler.setFormatter(FileFormatter())
        logger.addHandler(file_handler)
        output_logger.addHandler(file_handler)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER)


class OutputRelay:
    """Pass a step's output on as it arrives: raw bytes to the screen, whole lines to the log file.

    The screen gets the bytes untouched (so ``\\r`` progress bars stay progress bars); the log
    gets complete lines, split at ``\\n`` or ``\\r``, decoded leniently, and at most
    MAX_LOG_LINE long. Memory stays bounded by one chunk plus one partial line.
    """

    def __init__(self, screen: BinaryIO | None, log_to_file: bool, record_limit: int = MAX_LOG_LINE) -> None:
        self.screen = screen
        self.logger = logging.getLogger(OUTPUT_LOGGER) if log_to_file else None
        self.record_limit = max(record_limit, 1)
        self.partial = b""
        self.screen_failed = False
        self.screen_mid_line = False

    def write(self, chunk: bytes) -> None:
        if self.screen is not None:
            self._to_screen(chunk)
        if self.logger is not None:
            self._to_log(chunk)

    def flush(self) -> None:
        """End the step's output: finish an unfinished last line on the screen and in the log."""
        if self.screen is not None and self.screen_mid_line:
            self._to_screen(b"\n")
        if self.logger is not None and self.partial:
            self._emit(self.partial)
            self.partial = b""

    def _to_screen(self, chunk: bytes) -> None:
        assert self.screen is not None
        try:
            self.screen.write(chunk)
            self.screen.flush()
            self.screen_mid_line = not chunk.endswith(b"\n")
        except (OSError, ValueError) as error:
            self.screen = None
            if not self.screen_failed:
                self.screen_failed = True
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(f"Lynx: cannot write step output to the screen ({error}); the run goes on.\n")

    def _to_log(self, chunk: bytes) -> None:
        data = self.partial + chunk if self.partial else chunk
        # A trailing \r may be the first half of \r\n: keep it until the next chunk says.
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
        if cut < 0:
            self.partial = data
        else:
            self.partial = data[cut + 1 :]
            self._emit(data[: cut + 1])
        while len(self.partial) >= MAX_LOG_LINE:
            self._emit(self.partial[:MAX_LOG_LINE])
            self.partial = self.partial[MAX_LOG_LINE:]

    def _emit(self, block: bytes) -> None:
        assert self.logger is not None
        text = block.decode("utf-8", "replace")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if text.endswith("\n"):
            text = text[:-1]
        if len(text) + (text.count("\n") + 1) * LINE_PREFIX <= self.record_limit:
            self.logger.info(text)
            return
        # Small --log-size: keep each record below it so rotation can keep files near the size.
        piece: list[str] = []
        size = 0
        for line in text.split("\n"):
            if piece and size + len(line) > self.record_limit:
                self.logger.info("\n".join(piece))
                piece, size = [], 0
            piece.append(line)
            size += len(line) + 1 + LINE_PREFIX
        if piece:
            self.logger.info("\n".join(piece))


def color_wanted(stream: Any, environ: dict[str, str]) -> bool:
    """Color only on a terminal, and never with NO_COLOR set or TERM=dumb."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in environ and environ.get("TERM") != "dumb"
