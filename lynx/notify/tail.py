"""The end of a run's output with Lynx's own lines, kept in a bounded buffer for the events that carry it."""

from __future__ import annotations

import logging
import threading
from typing import Any

HANDLER = "lynx-notify-tail"


class LogTail:
    """The last ``size`` bytes of what the log file would get (as plain lines); any thread may add to it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data = bytearray()
        self._lock = threading.Lock()

    def add(self, data: bytes) -> None:
        with self._lock:
            self._data += data
            # Trimmed now and then, not on every line: memory stays within twice the size.
            if len(self._data) > 2 * self.size + 4096:
                del self._data[: len(self._data) - self.size]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def snapshot(self) -> bytes:
        """What the tail holds now (at most ``size`` bytes), for an event to carry whatever comes later."""
        with self._lock:
            return bytes(self._data[-self.size :])


def cut(data: bytes, size: int) -> str:
    """The last ``size`` bytes of ``data`` as text, starting at a line's start when cut (never inside a character)."""
    if size <= 0 or not data:
        return ""
    if len(data) > size:
        data = data[-size:]
        start = data.find(b"\n") + 1
        if 0 < start < len(data):
            data = data[start:]
    return data.decode("utf-8", "replace").lstrip("\ufffd")


class TailSink:
    """Stands where the relay expects the log file's handler: step output goes to the tail and on to the file."""

    def __init__(self, tail: LogTail, log_file: Any = None) -> None:
        self.tail = tail
        self.log_file = log_file

    def write_output(self, lines: bytes) -> None:
        self.tail.add(lines + b"\n")
        if self.log_file is not None:
            self.log_file.write_output(lines)


class _TailHandler(logging.Handler):
    def __init__(self, tail: LogTail) -> None:
        super().__init__(logging.INFO)
        self.tail = tail

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.tail.add((record.getMessage() + "\n").encode("utf-8", "replace"))
        except Exception:  # a message that cannot be rendered must not end the run
            self.handleError(record)


def capture_log(tail: LogTail, logger: logging.Logger) -> None:
    """Add Lynx's own lines (INFO and above) to ``tail``; called again, it replaces its handler."""
    for handler in list(logger.handlers):
        if handler.get_name() == HANDLER:
            logger.removeHandler(handler)
    handler = _TailHandler(tail)
    handler.set_name(HANDLER)
    logger.addHandler(handler)
