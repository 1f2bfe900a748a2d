"""Building a whole config: its top-level keys, named steps from ``configs``, then each step, the schedule and
the notification channels."""

from __future__ import annotations

import os
from typing import Any, Mapping

from lynx.config.schedules import build_schedule
from lynx.config.steps import StepContext, build_step
from lynx.config.values import kind_of, unknown_key
from lynx.errors import ConfigError
from lynx.records import Channel, Pipeline

TOP_LEVEL_KEYS = ("cron", "configs", "steps", "vars", "python", "notify")


def build_pipeline(document: Any, source: str, cwd: str, environ: Mapping[str, str] = os.environ) -> Pipeline:
    """The whole document as a Pipeline: top-level keys, named steps expanded, every step and the schedule built."""
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {kind_of(document)}"
        raise ConfigError(f"{source}: the config must be a mapping with a 'steps' list, but the file is {kind}")
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{source}: {unknown_key(key, TOP_LEVEL_KEYS)}")
    raw_steps = document.get("steps")
    if raw_steps is None:
        raise ConfigError(f"{source}: 'steps' is missing: list the steps to run under 'steps:'")
    if not isinstance(raw_steps, list):
        raise ConfigError(f"{source}: 'steps' must be a list of steps, not a {kind_of(raw_steps)}")
    if not raw_steps:
        raise ConfigError(f"{source}: 'steps' is empty: there is nothing to run")
    variables = document.get("vars")
    if variables is not None and not isinstance(variables, dict):
        raise ConfigError(f"{source}: 'vars' must be a mapping of names to values, not a {kind_of(variables)}")
    context = StepContext(source, cwd, environ)
    python = document.get("python")
    if python is not None:
        context.python = context.interpreter(python, f"{source}: 'python'")
    if any(isinstance(raw, str) for raw in raw_steps):
        raw_steps = _expand_named_steps(raw_steps, document.get("configs"), source)
    steps = tuple(build_step(number, raw, context) for number, raw in enumerate(raw_steps, 1))
    schedule = build_schedule(document["cron"], source) if "cron" in document else None
    channels: tuple[Channel, ...] = ()
    if "notify" in document:
        # Only configs that notify load its rules.
        from lynx.config.notify import build_channels

        channels = build_channels(document["notify"], context)
    return Pipeline(source=source, steps=steps, schedule=schedule, channels=channels)


def _expand_named_steps(raw_steps: list[Any], configs: Any, source: str) -> list[Any]:
    """Replace each plain string in ``steps`` by the ``configs`` entry of that name (one step or a list)."""
    named: dict[str, Any] = {}
    if isinstance(configs, dict):
        named = {str(name): value for name, value in configs.items()}
    elif isinstance(configs, list):
        for position, entry in enumerate(configs, 1):
            if isinstance(entry, dict) and len(entry) == 1:
                name, value = next(iter(entry.items()))
                if str(name) in named:
                    raise ConfigError(
                        f"{source}: 'configs' entry {position} is named '{name}' again: a named step needs one entry"
                    )
                named[str(name)] = value
    expanded: list[Any] = []
    for raw in raw_steps:
        if not isinstance(raw, str):
            expanded.append(raw)
            continue
        where = f"{source}: step {len(expanded) + 1}"
        if raw not in named:
            known = f"the known names are: {', '.join(named)}" if named else "'configs' names no entries"
            raise ConfigError(
                f"{where}: a step must be a mapping with a 'script', or the name of a 'configs' entry; "
                f"'{raw}' is neither ({known})"
            )
        value = named[raw]
        if isinstance(value, dict):
            expanded.append(value)
        elif isinstance(value, list) and value:
            expanded.extend(value)
        else:
            raise ConfigError(
                f"{where} ({raw}): the 'configs' entry '{raw}' must be a step (a mapping with a 'script') "
                f"or a list of steps, not a {kind_of(value)}"
            )
    return expanded
