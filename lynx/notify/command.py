"""The ``command`` channel: run a program (never a shell) with the event in its environment and on its input.

Its output is said in Lynx's log; at its timeout it is ended with everything in its process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile

from lynx.channels import Channel
from lynx.children import released, spawn
from lynx.notify.delivery import Context, NotifyError
from lynx.notify.event import Event

# How long an ended hook gets between SIGTERM and SIGKILL.
GRACE = 1.0
# How much of a hook's output is said in the log (its end).
OUTPUT_KEPT = 64 * 1024


def environment(event: Event, context: Context) -> dict[str, str]:
    """Lynx's environment with ``LYNX_EVENT``, ``LYNX_RUN_ID``, ``LYNX_NAME``, ``LYNX_RESULT``,
    ``LYNX_FAILED_STEP``, ``LYNX_CONFIG_FILE`` and ``LYNX_LOG_FILE`` (empty when not known)."""
    failed = event.failed_step
    return {
        **context.environ,
        "LYNX_EVENT": event.kind,
        "LYNX_RUN_ID": event.run_id,
        "LYNX_NAME": event.name,
        "LYNX_RESULT": event.result or "",
        "LYNX_FAILED_STEP": str(failed) if failed is not None else "",
        "LYNX_CONFIG_FILE": str(event.record.get("config_file") or ""),
        "LYNX_LOG_FILE": context.log_file or "",
    }


def send(channel: Channel, event: Event, context: Context) -> None:
    with tempfile.TemporaryFile() as output:
        try:
            # Lynx's own child: its reaping of orphans leaves it to this thread (lynx.children.spawn).
            popen = spawn(
                channel.argv(context.python),
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment(event, context),
                start_new_session=True,
            )
        except OSError as error:
            raise NotifyError(f"could not start it: {error.strerror or error}") from None
        ended = False
        try:
            popen.communicate(event.json(channel.log_tail), timeout=channel.timeout)
        except subprocess.TimeoutExpired:
            ended = True
            _end(popen)
        finally:
            if popen.returncode is not None:
                released(popen)
        last = _say_output(output, channel, context)
    if ended:
        raise NotifyError(f"still running after {channel.timeout:g} s; ended it")
    if popen.returncode != 0:
        code = popen.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise NotifyError(f"{how}{': ' + last if last else ''}")


def _end(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the hook's process group, SIGKILL a second later."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signum)
        try:
            popen.wait(GRACE)
            return
        except subprocess.TimeoutExpired:
            continue
    popen.wait()


def _say_output(output: object, channel: Channel, context: Context) -> str:
    """Say the end of what the hook printed in the log, one line each; return its last line."""
    handle = output  # a binary temporary file
    size = handle.seek(0, os.SEEK_END)  # type: ignore[attr-defined]
    handle.seek(max(0, size - OUTPUT_KEPT))  # type: ignore[attr-defined]
    text = handle.read().decode("utf-8", "replace")  # type: ignore[attr-defined]
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    for line in lines:
        context.say(f"{channel.label}: {line}")
    return lines[-1] if lines else ""
