"""What an event says, built once: its JSON, its one-line summary, an e-mail's subject and body.

The JSON is the run's history record exactly as the history builds it (``lynx history --json``),
with ``event``, ``log_tail``, ``text`` and ``host``: the record is handed in, never rebuilt here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lynx.history import run_name, to_json
from lynx.notify.tail import cut
from lynx.outcome import signal_name

if TYPE_CHECKING:
    from lynx.outcome import RunResult

# A run's end as an event: the run's result -> the event.
END_EVENTS = {"ok": "success", "failed": "failure", "interrupted": "interrupted"}


@dataclass(frozen=True)
class Event:
    """One event of one run (``start``, ``success``, ``failure``, ``interrupted``, or ``test``)."""

    kind: str
    record: dict[str, Any]
    name: str
    text: str
    subject: str
    # The summary and what failed, without the log tail (each channel takes as much tail as it wants).
    details: str
    # The failed step's exit code when it is one a process can exit with (1-255), else None.
    exit_code: int | None = None
    # The end of the run's output when the event happened (each channel takes as much of it as it wants).
    tail: bytes = b""

    @property
    def run_id(self) -> str:
        return str(self.record.get("run_id") or "")

    @property
    def result(self) -> str | None:
        value = self.record.get("result")
        return value if isinstance(value, str) else None

    @property
    def failed_step(self) -> int | None:
        value = self.record.get("failed_step")
        return value if isinstance(value, int) else None

    def log_tail(self, size: int) -> str:
        return cut(self.tail, size)

    def json(self, log_tail: int) -> bytes:
        """The event's JSON (ASCII): the history record with ``event``, ``log_tail``, ``text`` and ``host``."""
        payload = {"event": self.kind, **self.record, "log_tail": self.log_tail(log_tail), "text": self.text}
        payload.setdefault("host", os.uname().nodename)
        return to_json(payload).encode("ascii")

    def body(self, log_tail: int) -> str:
        """An e-mail's (or Apprise message's) text: the summary, what failed, and the end of the output."""
        tail = self.log_tail(log_tail)
        if not tail:
            return self.details
        return f"{self.details}\n\nThe end of the output:\n\n{tail}"


def build_event(kind: str, record: dict[str, Any], result: RunResult | None, tail: bytes = b"") -> Event:
    """The event ``kind`` of the run that ``record`` (from the history) and ``result`` describe.

    ``result`` is None for ``start`` and ``test``: the run has not ended (its record says ``result: null``).
    """
    if result is None:
        record = {**record, "result": None, "ended_at": None, "duration_s": None}
    name = run_name(record)
    host = str(record.get("host") or os.uname().nodename)
    exit_code = None
    if kind == "start":
        text = f"{name} started on {host}."
        subject = f"[lynx] {name} started"
    elif kind == "test":
        text = f"Test notification from Lynx for {name} on {host}."
        subject = f"[lynx] {name}: test notification"
    else:
        assert result is not None
        # The record's own figure: what the text says is what the JSON beside it says.
        took = f"{float(record.get('duration_s') or 0.0):.2f} s"
        step = _step_words(result)
        if result.failed is not None and not result.interrupted:
            failed = result.failed
            code = failed.returncode
            exit_code = code if 0 < code < 256 and not failed.timed_out else None
            text = f"{name} failed at {step} after {took} on {host}: {_reason(result)}."
            subject = f"[lynx] {name} failed at {step}"
        elif result.interrupted:
            text = f"{name} was interrupted {'at ' + step if step else 'before its first step'} after {took} on {host}."
            subject = f"[lynx] {name} interrupted" + (f" at {step}" if step else "")
        else:
            count = len(result.steps)
            text = f"{name} ok: {count} step{'s' if count != 1 else ''} in {took} on {host}."
            subject = f"[lynx] {name} ok"
    return Event(
        kind=kind,
        record=record,
        name=name,
        text=text,
        subject=subject,
        details=_details(text, record, result),
        exit_code=exit_code,
        tail=tail,
    )


def _step_words(result: RunResult) -> str:
    """``step 3 (train)``: the failed step, or the one running when the run was interrupted."""
    if result.failed is not None:
        step = result.failed.step
        return f"step {step.number} ({step.title})"
    running = [record for record in result.steps if record.result == "interrupted"]
    if running:
        return f"step {running[-1].number} ({running[-1].title})"
    return ""


def _reason(result: RunResult) -> str:
    assert result.failed is not None
    failed = result.failed
    if failed.timed_out:
        return f"timed out after {failed.step.timeout:g} s"
    if failed.launch_error is not None:
        return f"could not be started ({failed.launch_error})"
    code = failed.returncode
    return f"killed by {signal_name(-code)}" if code < 0 else f"exit code {code}"


def _details(text: str, record: dict[str, Any], result: RunResult | None) -> str:
    lines = [text, ""]
    if result is not None and result.failed is not None and not result.interrupted:
        from lynx.records import shown_command_line

        number = result.failed.step.number
        argv = next((step.argv for step in result.steps if step.number == number), ())
        lines.append(result.failed.description)
        if argv:
            lines.append(f"Command: {shown_command_line(argv)}")
        lines.append("")
    lines.append(f"Run: {record.get('run_id')}")
    lines.append(f"Config: {record.get('config_file')}")
    if record.get("started_at"):
        lines.append(f"Started: {record.get('started_at')}")
    return "\n".join(lines)
