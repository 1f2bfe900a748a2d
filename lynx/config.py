"""Read the YAML config once, check all of it, and turn it into frozen records.

Nothing past this module sees YAML, OmegaConf objects or raw dicts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from lynx.errors import ConfigError

TOP_LEVEL_KEYS = ("cron", "configs", "steps")
STEP_KEYS = ("script", "arguments")
CRON_FIELDS = (
    "year",
    "month",
    "day",
    "week",
    "day_of_week",
    "hour",
    "minute",
    "second",
    "start_date",
    "end_date",
    "timezone",
    "jitter",
)
# An honest config is far below both; a YAML "billion laughs" bomb is far above the second.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_EXPANDED_NODES = 2_000_000
MAX_INTERPOLATED_NODES = 200_000

# Arguments without quotes, backslashes or white space other than " \t\r\n" split the same with str.split,
# which is much faster than shlex on configs with thousands of steps.
_NEEDS_SHLEX = re.compile(r"['\"\\]|[^\S \t\r\n]")


@dataclass(frozen=True)
class Step:
    """One step: a Python script and the words passed to it."""

    number: int
    script: str
    path: str
    arguments: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"Step {self.number} ({self.script})"


@dataclass(frozen=True)
class Schedule:
    """The fields of an APScheduler CronTrigger, as given in the ``cron`` section."""

    fields: tuple[tuple[str, Any], ...]

    def trigger(self) -> Any:
        """Build the CronTrigger (raises ValueError/TypeError on bad values)."""
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger(**dict(self.fields))


@dataclass(frozen=True)
class Pipeline:
    """A whole config: the file it came from, its steps and its optional schedule."""

    source: str
    steps: tuple[Step, ...]
    schedule: Schedule | None = None


def load_pipeline(path: str | os.PathLike[str], *, cwd: str | None = None) -> Pipeline:
    """Read, check and convert the config file at ``path``.

    Args:
        path: the YAML file.
        cwd: where relative script paths are looked up first (default: the current directory).

    Raises:
        ConfigError: for anything wrong with the file, naming the step and field.
    """
    source = os.fspath(path)
    document = _read_yaml(source)
    return _build_pipeline(document, source, cwd or os.getcwd())


def split_arguments(entries: list[Any] | tuple[Any, ...]) -> tuple[str, ...]:
    """Split each entry like a shell splits words, without running a shell."""
    words: list[str] = []
    for entry in entries:
        text = str(entry)
        if not _NEEDS_SHLEX.search(text):
            words.extend(text.split())
        else:
            import shlex

            words.extend(shlex.split(text))
    return tuple(words)


def _read_yaml(source: str) -> Any:
    import yaml

    try:
        size = os.path.getsize(source)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source}: the file is {size} bytes; a config may have at most {MAX_CONFIG_BYTES}")
        with open(source, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ConfigError(f"{source}: cannot read the config file: {error.strerror or error}") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(raw, Loader=loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = error.problem or error.context or "invalid YAML"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as error:
        # PyYAML's reader errors (bad UTF-8, control characters) span two lines: keep the first.
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{source}: invalid YAML: {first_line}") from None
    # OmegaConf builds an object for every expanded node: a far smaller expansion is already too much.
    interpolates = b"${" in raw
    limit = MAX_INTERPOLATED_NODES if interpolates else MAX_EXPANDED_NODES
    try:
        if isinstance(document, (dict, list)):
            _expanded_size(document, {}, set(), limit)
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None
    except _AliasCycleError:
        raise ConfigError(f"{source}: invalid YAML: an alias refers to a node that contains it") from None
    except _AliasBombError:
        raise ConfigError(
            f"{source}: the YAML aliases expand to more than {limit} nodes; refusing to load it"
        ) from None
    # Only configs that use interpolation pay for OmegaConf.
    if interpolates:
        document = _resolve_interpolations(document, source)
    return document


class _AliasCycleError(Exception):
    pass


class _AliasBombError(Exception):
    pass


def _expanded_size(node: Any, sizes: dict[int, int], on_path: set[int], limit: int) -> int:
    """How many nodes a walk over ``node`` would visit, computed once per shared object.

    YAML aliases share objects, so the loaded graph stays small while its expansion (what any
    walk over it sees, OmegaConf's included) can be astronomically large: a "billion laughs" bomb.
    """
    key = id(node)
    size = sizes.get(key)
    if size is not None:
        return size
    if key in on_path:
        raise _AliasCycleError
    on_path.add(key)
    total = 1
    for child in node.values() if type(node) is dict else node:
        if type(child) is dict or type(child) is list:
            total += _expanded_size(child, sizes, on_path, limit)
        else:
            total += 1
    on_path.discard(key)
    if total > limit:
        raise _AliasBombError
    sizes[key] = total
    return total


def _resolve_interpolations(document: Any, source: str) -> Any:
    """Resolve OmegaConf ``${...}`` interpolations; only configs that use them pay for OmegaConf."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.create(_dates_as_text(document)), resolve=True)
    except OmegaConfBaseException as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{source}: cannot resolve an interpolation: {message}") from None


def _dates_as_text(node: Any) -> Any:
    """A copy with YAML dates as ISO text, which OmegaConf takes (and CronTrigger too)."""
    if isinstance(node, dict):
        return {key: _dates_as_text(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_dates_as_text(value) for value in node]
    if isinstance(node, (date, datetime)):
        return node.isoformat(sep=" ") if isinstance(node, datetime) else node.isoformat()
    return node


def _unknown_key(key: object, known: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(known)})"
    return f"unknown key '{key}'{hint}"


def _build_pipeline(document: Any, source: str, cwd: str) -> Pipeline:
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {_kind(document)}"
        raise ConfigError(f"{source}: the config must be a mapping with a 'steps' list, but the file is {kind}")
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{source}: {_unknown_key(key, TOP_LEVEL_KEYS)}")
    raw_steps = document.get("steps")
    if raw_steps is None:
        raise ConfigError(f"{source}: 'steps' is missing: list the steps to run under 'steps:'")
    if not isinstance(raw_steps, list):
        raise ConfigError(f"{source}: 'steps' must be a list of steps, not a {_kind(raw_steps)}")
    if not raw_steps:
        raise ConfigError(f"{source}: 'steps' is empty: there is nothing to run")
    lookup = _ScriptLookup(cwd, os.path.dirname(source))
    words: dict[int, tuple[str, ...]] = {}
    steps = tuple(_build_step(number, raw, source, lookup, words) for number, raw in enumerate(raw_steps, 1))
    schedule = _build_schedule(document["cron"], source) if "cron" in document else None
    return Pipeline(source=source, steps=steps, schedule=schedule)


def _build_step(number: int, raw: Any, source: str, lookup: _ScriptLookup, words: dict[int, tuple[str, ...]]) -> Step:
    """One step; ``words`` caches the split of argument lists that merge keys share between steps."""
    where = f"{source}: step {number}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a step must be a mapping with a 'script', not a {_kind(raw)}")
    script = raw.get("script")
    if isinstance(script, str) and script.strip():
        where = f"{where} ({script})"
    for key in raw:
        if key not in STEP_KEYS:
            raise ConfigError(f"{where}: {_unknown_key(key, STEP_KEYS)}")
    if script is None:
        raise ConfigError(f"{where}: 'script' is missing")
    if not isinstance(script, str) or not script.strip():
        raise ConfigError(f"{where}: 'script' must be the path of a Python file, not a {_kind(script)}")
    entries = raw.get("arguments")
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: 'arguments' must be a list of strings, not a {_kind(entries)}")
    arguments = words.get(id(entries))
    if arguments is None:
        for position, entry in enumerate(entries, 1):
            if isinstance(entry, bool) or not isinstance(entry, (str, int, float)):
                raise ConfigError(f"{where}: 'arguments' entry {position} must be a string, not a {_kind(entry)}")
        try:
            arguments = words[id(entries)] = split_arguments(entries)
        except ValueError as error:
            raise ConfigError(f"{where}: cannot split 'arguments': {error}") from None
        if any("\0" in word for word in arguments):
            raise ConfigError(f"{where}: 'arguments' contain a NUL character, which no program can receive")
    return Step(number=number, script=script, path=lookup.find(script, where), arguments=arguments)


class _ScriptLookup:
    """Find scripts in the current directory first, then in the config file's directory."""

    def __init__(self, cwd: str, config_dir: str) -> None:
        self.cwd = cwd
        self.config_dir = config_dir
        self.found: dict[str, str] = {}

    def find(self, script: str, where: str) -> str:
        path = self.found.get(script)
        if path is None:
            path = self._search(script, where)
            # The interpreter would take "-name.py" for an option.
            path = self.found[script] = os.path.join(os.curdir, path) if path.startswith("-") else path
        return path

    def _search(self, script: str, where: str) -> str:
        path = os.path.expanduser(script)
        if os.path.isabs(path):
            if os.path.isfile(path):
                return path
            raise ConfigError(f"{where}: script not found: {path}")
        if os.path.isfile(os.path.join(self.cwd, path)):
            return path
        beside_config = os.path.join(self.config_dir, path)
        if os.path.isfile(beside_config):
            return beside_config
        looked = f"{os.path.join(self.cwd, path)} and {os.path.abspath(beside_config)}"
        raise ConfigError(f"{where}: script not found (looked in {looked})")


def _build_schedule(raw: Any, source: str) -> Schedule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: 'cron' must be a mapping of CronTrigger fields, not a {_kind(raw)}")
    if not raw:
        raise ConfigError(f"{source}: 'cron' is empty: give at least one field, e.g. second: '*/10'")
    for key in raw:
        if key not in CRON_FIELDS:
            raise ConfigError(f"{source}: cron: {_unknown_key(key, CRON_FIELDS)}")
    schedule = Schedule(fields=tuple((str(key), value) for key, value in raw.items()))
    try:
        trigger = schedule.trigger()
        # Computing a fire time also checks what building the trigger does not (jitter).
        first = trigger.get_next_fire_time(None, datetime.now(trigger.timezone))
    except Exception as error:  # APScheduler raises several types
        raise ConfigError(f"{source}: cron: {_culprit(schedule)}{error}") from None
    if first is None:
        raise ConfigError(f"{source}: cron: the schedule never fires (is end_date in the past?)")
    return schedule


def _culprit(schedule: Schedule) -> str:
    """Name the field whose value the trigger refused, when one alone is enough to refuse it."""
    for name, value in schedule.fields:
        try:
            trigger = Schedule(fields=((name, value),)).trigger()
            trigger.get_next_fire_time(None, datetime.now(trigger.timezone))
        except Exception:  # APScheduler raises several types
            return f"{name}: {value!r}: "
    return ""


def _kind(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)
