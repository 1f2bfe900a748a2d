"""Questions asked on the terminal: the rerun dialog, the config path, the log file name."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from lynx.logs import get_logger, paint
from lynx.outcome import Decision, StepResult

RERUN_STEP = "Do you want to rerun this step? (y/n)"
RERUN_PIPELINE = "Do you want to rerun the whole pipeline from the beginning? (y/n)"
CONFIG_PATH = "The configuration file does not exist. Please enter the path to the configuration file."
LOG_FILE = "Please enter the name for the log file, else the log information will be discarded"
YES = ("y", "yes")
NO = ("n", "no")


def ask(question: str, *, stdin: TextIO, stdout: TextIO, color: bool = False) -> str | None:
    """Print ``question`` and read one line; None at end of input (Ctrl+D)."""
    stdout.write(paint(question, "blue", color) + " ")
    stdout.flush()
    line = read_line(stdin)
    # The log tells the whole story: the screen shows the answer, the log file gets it here.
    get_logger().info(f"{question} {line.strip() if line else '(end of input)'}", extra={"file_only": True})
    if not line:
        stdout.write("\n")
        stdout.flush()
        return None
    return line.strip()


def read_line(stdin: TextIO) -> str:
    """One line of input (with its newline; empty at end of input), read from the file descriptor
    a byte at a time: a buffered read would take what comes after the answer, say the next
    lines of a pipe meant for the steps (``printf 'y\\nBob\\n' | lynx start``)."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return stdin.readline()  # not a file (a test's StringIO)
    line = bytearray()
    while not line.endswith(b"\n"):
        try:
            byte = os.read(fd, 1)
        except BlockingIOError:  # a step left the terminal non-blocking: wait for a key
            import select

            select.select([fd], [], [])
            continue
        except OSError:  # closed
            break
        if not byte:
            break
        line += byte
    return line.decode(getattr(stdin, "encoding", None) or "utf-8", "replace")


def ask_yes_no(question: str, *, stdin: TextIO, stdout: TextIO, color: bool = False) -> bool | None:
    """Ask until the answer is y/yes/n/no (any case); None at end of input."""
    while True:
        answer = ask(question, stdin=stdin, stdout=stdout, color=color)
        if answer is None:
            return None
        if answer.lower() in YES:
            return True
        if answer.lower() in NO:
            return False
        stdout.write("Please answer y or n.\n")


class RerunDialog:
    """The interactive ``on_failure``: rerun the step, rerun the pipeline, or stop."""

    def __init__(self, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, color: bool = False) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.color = color

    def __call__(self, result: StepResult) -> Decision:
        rerun_step = self._ask(RERUN_STEP)
        if rerun_step:
            return Decision.RERUN_STEP
        if rerun_step is not None and self._ask(RERUN_PIPELINE):
            return Decision.RESTART
        self.stdout.write(paint("Exiting...", "red", self.color) + "\n")
        self.stdout.flush()
        get_logger().info("Exiting...", extra={"file_only": True})
        return Decision.STOP

    def _ask(self, question: str) -> bool | None:
        return ask_yes_no(question, stdin=self.stdin, stdout=self.stdout, color=self.color)
