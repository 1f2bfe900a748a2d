"""Which of a config's steps a run runs: ``--from``, ``--until`` and ``--only`` resolved against its steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from lynx.errors import ConfigError
from lynx.records import Pipeline


@dataclass(frozen=True)
class Selection:
    """The steps a run runs when ``--from``, ``--until`` or ``--only`` pick some (by config number)."""

    numbers: frozenset[int]
    # How the user picked them, in order: ("from", "3"), ("only", "prep"), ...
    given: tuple[tuple[str, str], ...]

    @property
    def said(self) -> str:
        """``--from 3``, ``--only prep --only 4``: for messages."""
        return " ".join(f"--{option} {value}" for option, value in self.given)

    def as_record(self) -> dict[str, object]:
        """For the history and the scheduler's record: ``{"from": "3"}``, ``{"only": ["prep", "4"]}``."""
        record: dict[str, object] = {}
        for option, value in self.given:
            if option == "only":
                record.setdefault("only", [])
                record["only"].append(value)  # type: ignore[attr-defined]
            else:
                record[option] = value
        return record


def select_steps(
    pipeline: Pipeline, *, from_: str | None = None, until: str | None = None, only: Sequence[str] = ()
) -> Selection | None:
    """The selection the options make (None: every step).

    Args:
        from_, until: a step number (as Lynx shows them, from 1) or a step's name; ``until`` included.
        only: steps to run, each a number or a name.

    Raises:
        ConfigError: a step that is not there, ``--from`` after ``--until``, or ``--only`` with either,
            naming the steps there are (exit 2).
    """
    if only and (from_ is not None or until is not None):
        raise ConfigError("--only picks steps one by one: use it without --from and --until")
    if from_ is None and until is None and not only:
        return None
    numbers = sorted({step.number for step in pipeline.steps})
    given: list[tuple[str, str]] = []
    if only:
        chosen = set()
        for text in only:
            chosen.add(_number(pipeline, "only", text))
            given.append(("only", text))
        return Selection(numbers=frozenset(chosen), given=tuple(given))
    first, last = numbers[0], numbers[-1]
    if from_ is not None:
        first = _number(pipeline, "from", from_)
        given.append(("from", from_))
    if until is not None:
        last = _number(pipeline, "until", until)
        given.append(("until", until))
    if first > last:
        raise ConfigError(f"--from {from_} (step {first}) comes after --until {until} (step {last})")
    return Selection(numbers=frozenset(n for n in numbers if first <= n <= last), given=tuple(given))


def _number(pipeline: Pipeline, option: str, text: str) -> int:
    """The config number of the step ``text`` names, by number or by name."""
    numbers = {step.number for step in pipeline.steps}
    if text.isdigit() and int(text) in numbers:
        return int(text)
    named = sorted({step.number for step in pipeline.steps if step.name and step.group_title == text})
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        listed = ", ".join(str(number) for number in named)
        raise ConfigError(f"--{option} {text}: steps {listed} are named so; give the step's number")
    raise ConfigError(f"--{option} {text}: there is no such step; the steps are {_known(pipeline)}")


def _known(pipeline: Pipeline) -> str:
    """``1 (prep), 2 (train), 3 (tasks/eval.py)``: each config step once."""
    seen: dict[int, str] = {}
    for step in pipeline.steps:
        if step.number not in seen:
            seen[step.number] = step.group_title
    return ", ".join(f"{number} ({title})" for number, title in seen.items())


def step_ref(value: Any) -> str | None:
    """A ``--from``/``--until`` value as a record kept it (a step's number or name), else None."""
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def record_said(record: Any) -> list[str]:
    """A selection as the history and a scheduler's record keep it, as the options that asked for it:
    ``["--from 3", "--only prep"]`` (anything else in it is passed over)."""
    if not isinstance(record, dict):
        return []
    said = [f"--{option} {record[option]}" for option in ("from", "until") if step_ref(record.get(option))]
    only = record.get("only")
    return said + ([f"--only {each}" for each in only if step_ref(each)] if isinstance(only, list) else [])
