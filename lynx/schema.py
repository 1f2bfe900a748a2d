"""What Lynx reads back from ``.lynx/``, checked field by field in one place.

A scheduler record (``.lynx/schedulers/NAME.json``, ``.lynx/stopped/NAME.json``) and a history line
(``.lynx/runs.jsonl``) are JSON that anyone able to write the folder may have damaged: every
reader parses them with :func:`parse_json` and checks them here, so nothing further down meets a
wrong type, a deep nest, a NaN or an infinite number. Keys a later Lynx may add are let through.
"""

from __future__ import annotations

import math
import sys
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

Check = Callable[[Any], bool]
# Longer digit strings are no number Lynx wrote (Python before 3.11 converts them in quadratic time).
MAX_DIGITS = 40


def parse_json(text: str | bytes) -> Any:
    """``json.loads`` without NaN, Infinity (also as ``1e400``), huge integers or a recursion error.

    Raises:
        ValueError: it is no such JSON.
    """
    import json

    extra: dict[str, Any] = {"parse_constant": _no_constant, "parse_float": _finite_float}
    if sys.version_info < (3, 11):  # later Pythons bound the digits themselves
        extra["parse_int"] = _bounded_int
    try:
        return json.loads(text, **extra)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except UnicodeDecodeError as error:
        raise ValueError(str(error)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise ValueError("an integer with too many digits")
    return int(text)


# --- the checks a field may have ----------------------------------------------------------------


def text(value: Any) -> bool:
    return isinstance(value, str)


def flag(value: Any) -> bool:
    return isinstance(value, bool)


def integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def count(value: Any) -> bool:
    """A whole number from 0."""
    return integer(value) and value >= 0


def positive(value: Any) -> bool:
    return integer(value) and value > 0


def number(value: Any) -> bool:
    """A finite number (a float or a whole one)."""
    return (integer(value) or isinstance(value, float)) and math.isfinite(value)


def seconds(value: Any) -> bool:
    """A finite number from 0."""
    return number(value) and value >= 0


def stamp(value: Any) -> bool:
    """An ISO 8601 time as Lynx writes them."""
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def optional(check: Check) -> Check:
    """``check``, or None."""
    if isinstance(check, Shape):
        return Shape(check.fields, check.required, nullable=True)

    def optional_check(value: Any) -> bool:
        return value is None or check(value)

    optional_check.__doc__ = f"{_what(check)}, or null"
    return optional_check


class ListOf:
    """A JSON list of items that each pass ``item``."""

    def __init__(self, item: Check, what: str, *, non_empty: bool = False) -> None:
        self.item = item
        self.non_empty = non_empty
        self.__doc__ = f"a {'non-empty ' if non_empty else ''}list of {what}"

    def __call__(self, value: Any) -> bool:
        return isinstance(value, list) and (bool(value) or not self.non_empty) and all(map(self.item, value))

    def problem(self, value: Any, where: str) -> str:
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(self.item, Shape) and isinstance(item, dict):
                    found = self.item.problem(item, f"{where}[{index}].")
                    if found is not None:
                        return found
                elif not self.item(item):
                    return f"'{where}[{index}]' is not {_what(self.item)}"
        return f"'{where}' is not {_what(self)}"


class Shape:
    """A JSON object whose known keys pass their checks (absent ones only if not ``required``)."""

    def __init__(self, fields: Mapping[str, Check], required: Sequence[str] = (), *, nullable: bool = False) -> None:
        self.fields = fields
        self.required = tuple(required)
        self.nullable = nullable
        self.__doc__ = "an object of the right fields" + (", or null" if nullable else "")

    def __call__(self, value: Any) -> bool:
        return (value is None and self.nullable) or self.problem(value) is None

    def problem(self, data: Any, where: str = "") -> str | None:
        """What is wrong with ``data``, or None: e.g. ``'last_run.duration_s' is not a finite number from 0``."""
        if not isinstance(data, dict):
            return f"'{where[:-1]}' is not an object" if where else "it is not a JSON object"
        for key in self.required:
            if key not in data:
                return f"it has no '{where}{key}'"
        for key, check in self.fields.items():
            if key not in data or check(data[key]):
                continue
            if isinstance(check, Shape) and isinstance(data[key], dict):
                return check.problem(data[key], f"{where}{key}.")
            if isinstance(check, ListOf):
                return check.problem(data[key], f"{where}{key}")
            return f"'{where}{key}' is not {_what(check)}"
        return None


def _what(check: Check) -> str:
    doc = (check.__doc__ or "").strip().splitlines()
    if doc:
        first = doc[0].rstrip(".")
        return first[0].lower() + first[1:]
    return getattr(check, "__name__", "right")


text.__doc__ = "a string"
flag.__doc__ = "true or false"
integer.__doc__ = "a whole number"
positive.__doc__ = "a whole number from 1"
count.__doc__ = "a whole number from 0"
number.__doc__ = "a finite number"
seconds.__doc__ = "a finite number from 0"
stamp.__doc__ = "an ISO 8601 time"


# --- a scheduler's record -----------------------------------------------------------------------

LAST_RUN: dict[str, Check] = {
    "run_id": optional(text),
    "started_at": optional(stamp),
    "ended_at": optional(stamp),
    "duration_s": optional(seconds),
    "result": text,
    "failed_step": optional(positive),
}
DIRECTORY: dict[str, Check] = {"path": text, "device": count, "inode": count}
# The user-level options it was started with; later options join them (a newer Lynx's are let through).
OPTIONS: dict[str, Check] = {
    "config_file": text,
    "name": text,
    "log_file": optional(text),
    "log_level": text,
    "log_size": count,
    "log_backup_count": count,
    "keep_running": flag,
}
ENDED: dict[str, Check] = {"at": stamp, "reason": text, "exit_code": integer, "error": optional(text)}
ENTRY: dict[str, Check] = {
    "name": text,
    "pid": positive,
    "cmdline": ListOf(text, "strings", non_empty=True),
    "process_name": text,
    "exe": text,
    "status": text,
    "username": text,
    "create_time": optional(number),
    "start_ticks": optional(count),
    "boot_id": optional(text),
    "config_file": optional(text),
    "log_file": optional(text),
    "started_at": optional(stamp),
    "schedule": optional(text),
    "next_run": optional(stamp),
    "run_id": optional(text),
    "run_started_at": optional(stamp),
    "current_step": optional(positive),
    "step_started_at": optional(stamp),
    "last_run": Shape(LAST_RUN, ("result",), nullable=True),
    "updated_at": optional(stamp),
    "directory": Shape(DIRECTORY, tuple(DIRECTORY), nullable=True),
    "options": Shape(OPTIONS, nullable=True),
    "command_line": optional(ListOf(text, "strings")),
    "ended": Shape(ENDED, ("at", "reason", "exit_code"), nullable=True),
    "stopped_at": optional(stamp),
}
ENTRY_SHAPE = Shape(ENTRY, ("name", "pid", "cmdline"))


def entry_problem(data: Any) -> str | None:
    """What is wrong with a parsed scheduler record, or None."""
    return ENTRY_SHAPE.problem(data)


# --- a line of the run history ------------------------------------------------------------------

STEP: dict[str, Check] = {
    "number": positive,
    "script": text,
    "name": optional(text),
    "argv": ListOf(text, "strings"),
    "attempts": count,
    "returncode": optional(integer),
    "duration_s": seconds,
    "result": text,
    "timed_out": flag,
    "job_id": optional(text),
    "node": optional(text),
}
RUN: dict[str, Check] = {
    "run_id": optional(text),
    "name": optional(text),
    "config_file": optional(text),
    "config_sha256": optional(text),
    "host": optional(text),
    "user": optional(text),
    "python": optional(text),
    "lynx_version": optional(text),
    "started_at": stamp,
    "ended_at": optional(stamp),
    "duration_s": optional(seconds),
    "result": text,
    "failed_step": optional(positive),
    "steps": ListOf(Shape(STEP, ("number", "script", "result")), "steps"),
}
RUN_SHAPE = Shape(RUN, ("started_at", "result"))


def run_problem(data: Any) -> str | None:
    """What is wrong with a parsed history line, or None."""
    return RUN_SHAPE.problem(data)
