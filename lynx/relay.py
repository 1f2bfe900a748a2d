"""How a step's output is passed on as it arrives: raw bytes to the screen, whole lines to the log file,
and each line tagged with its step when several steps run at once."""

from __future__ import annotations

import threading
from typing import Any, BinaryIO, Iterator

from lynx.logs import fileno_of, get_logger, write_waiting

# A log line never grows beyond this: longer runs without a newline are split here.
MAX_LOG_LINE = 64 * 1024


class LineSplitter:
    """Cuts a stream of output chunks into blocks of whole lines, ended by ``\n``, ``\r`` or ``\r\n``;
    a line longer than MAX_LOG_LINE is cut there. Memory: one chunk and one partial line."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The blocks of whole lines ``chunk`` completes, each without its last separator."""
        data = self.partial + chunk if self.partial else chunk
        # A trailing \r may be the first half of \r\n: keep it until the next chunk says.
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end))
        if cut < 0:
            self.partial = data
        else:
            self.partial = data[cut + 1 :]
            # The separator ending the block is left out: whoever writes the lines adds its own.
            stop = cut - 1 if data[cut] == 0x0A and cut > 0 and data[cut - 1] == 0x0D else cut
            yield data[:stop]
        while len(self.partial) >= MAX_LOG_LINE:
            yield self.partial[:MAX_LOG_LINE]
            self.partial = self.partial[MAX_LOG_LINE:]

    def rest(self) -> bytes | None:
        """The unfinished last line, at the end of the output (None: there is none)."""
        if not self.partial:
            return None
        last = self.partial[:-1] if self.partial.endswith(b"\r") else self.partial
        self.partial = b""
        return last


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
        self.screen_fd = fileno_of(screen) if screen is not None else None
        self.log_file = log_file
        self.lines = LineSplitter()
        self.screen_mid_line = False
        # Tagged relays of steps that run side by side share it: one writer of whole lines at a time.
        self.lock = threading.Lock()

    def tagged(self, tag: str) -> TaggedRelay:
        """A relay for one of several steps running at once: whole lines, each starting with ``[tag] ``."""
        return TaggedRelay(self, tag)

    def write(self, chunk: bytes) -> None:
        if self.screen is not None:
            self._to_screen(chunk)
        if self.log_file is not None:
            self._to_log(chunk)

    def flush(self) -> None:
        """End the step's output: finish an unfinished last line on the screen and in the log."""
        if self.screen is not None and self.screen_mid_line:
            self._to_screen(b"\n")
        last = self.lines.rest() if self.log_file is not None else None
        if last is not None:
            self._emit(last)

    def _to_screen(self, chunk: bytes) -> None:
        assert self.screen is not None
        try:
            if self.screen_fd is None:
                self.screen.write(chunk)
                self.screen.flush()
            else:
                # Straight to the file descriptor: no copy into a buffer, one system call.
                write_waiting(self.screen_fd, chunk)
            self.screen_mid_line = not chunk.endswith(b"\n")
        except (OSError, ValueError) as error:
            # Said once, through the logger: the log file keeps it, and the console handler
            # (which cannot write either) reports the broken screen on stderr, once.
            self.screen = None
            get_logger().warning(f"Cannot write step output to the screen any more ({error}); the run goes on.")

    def _to_log(self, chunk: bytes) -> None:
        for block in self.lines.feed(chunk):
            self._emit(block)

    def _emit(self, block: bytes) -> None:
        """Log ``block``: lines without their final separator."""
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            block = block.decode("utf-8", "replace").encode("utf-8")
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self.log_file.write_output(block)


class TaggedRelay:
    """One step's output when several steps run at once: split into lines (at ``\n``, ``\r`` or ``\r\n``),
    each shown and logged whole, as ``[tag] line``, so lines of different steps never mix.

    A line appears as soon as its end arrives; one without an end is passed on at MAX_LOG_LINE bytes
    and when the step ends.
    """

    def __init__(self, shared: OutputRelay, tag: str) -> None:
        self.shared = shared
        self.prefix = f"[{tag}] ".encode("utf-8", "replace")
        self.lines = LineSplitter()

    def write(self, chunk: bytes) -> None:
        for block in self.lines.feed(chunk):
            self._emit(block)

    def flush(self) -> None:
        last = self.lines.rest()
        if last:
            self._emit(last)

    def _emit(self, block: bytes) -> None:
        """Pass on ``block``: lines without their final separator."""
        lines = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        tagged = b"\n".join(self.prefix + line for line in lines)
        shared = self.shared
        with shared.lock:
            if shared.screen is not None:
                shared._to_screen(tagged + b"\n")
            if shared.log_file is not None:
                shared._emit(tagged)
