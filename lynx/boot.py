"""How a background scheduler boots detached, and tells ``lynx start -bg`` it is ready to run.

The boot is ``python -c CODE lynx-arguments``: it waits for its record ("go" on its standard
input), takes the working directory off ``sys.path`` (``-c`` puts it first; the ``lynx`` command
never has it, and a ``json.py`` there would run as you), then runs Lynx's command line. Its
standard output and error stay a pipe to the launcher until it says it is ready (config loaded,
every check of ``-ni`` passed), or ends saying why not.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Sequence

# The detached scheduler's first act: wait until the launcher has recorded it ("go" on its
# standard input); an end of input without it means the record failed, so it ends untouched.
# Then the working directory ('' first on sys.path under -c) is taken off the path: nothing is
# imported from it, as in the foreground, where sys.path starts with the lynx script's folder.
_BOOT_HEAD = (
    "import os, sys; go = b''.join(iter(lambda: os.read(0, 64), b'')); go == b'go' or sys.exit(1); "
    "null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0); os.close(null); "
    "sys.path[:1] == [''] and sys.path.pop(0); sys.path.insert(0, "
)
_BOOT_TAIL = "); from lynx.cli import main; main()"
# What the detached scheduler writes on its standard output once it is ready to run.
READY = b"lynx-scheduler-ready\n"
# How long 'lynx start -bg' waits for that (a SLURM check may take a while on a busy cluster).
READY_TIMEOUT = 60.0


def is_boot(cmdline: Sequence[str]) -> bool:
    """Python running Lynx's detached boot (this one's, or an earlier version's: those did not wait
    for their record or kept the working directory on the path, and ended alike)."""
    return len(cmdline) >= 3 and cmdline[1] == "-c" and cmdline[2].endswith(_BOOT_TAIL) and "--detached" in cmdline[3:]


def boot_command(arguments: Sequence[str], *, python: str = sys.executable, root: str | None = None) -> list[str]:
    """How ``python`` runs ``lynx <arguments>`` detached: this Lynx, and nothing from the working directory.

    Args:
        root: the folder holding the ``lynx`` package (default: this one's).
    """
    root = root or str(Path(__file__).resolve().parent.parent)
    return [python, "-c", _BOOT_HEAD + repr(root) + _BOOT_TAIL, *arguments]


def wait_until_ready(popen: Any, timeout: float = READY_TIMEOUT) -> tuple[bool | None, bytes]:
    """Read what the detached scheduler says until it is ready, ends, or ``timeout`` passes.

    Returns:
        True (ready), False (it ended first: the process has been waited for), or None (no word
        within ``timeout``); and what it wrote meanwhile (its ``Error:`` line, or a traceback).
    """
    import select
    import time

    stream = popen.stdout
    deadline = time.monotonic() + timeout
    said = b""
    try:
        while READY not in said:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, said
            if not select.select([stream], [], [], left)[0]:
                continue
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                popen.wait()
                return False, said
            said += chunk
        return True, said.replace(READY, b"", 1)
    finally:
        stream.close()


def announce_ready() -> None:
    """In the detached scheduler: tell the launcher it is ready, then let go of its pipe for good."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    with contextlib.suppress(OSError):  # the launcher was interrupted: it runs on, recorded
        os.write(1, READY)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
