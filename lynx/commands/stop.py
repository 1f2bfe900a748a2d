"""``lynx stop``: stop the background scheduler recorded in this directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from lynx import dialog
from lynx.daemon import stop_background


def stop(*, yes: bool, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, directory: Path | None = None) -> int:
    """Run ``lynx stop`` and return its exit code."""

    def confirm(question: str) -> bool | None:
        if yes:
            return True
        return dialog.ask_yes_no(question, stdin=stdin, stdout=stdout)

    def say(line: str) -> None:
        stdout.write(line + "\n")
        stdout.flush()

    return stop_background(directory or Path.cwd(), confirm=confirm, say=say)
