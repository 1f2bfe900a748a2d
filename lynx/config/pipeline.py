"""Building a whole config: its top-level keys, named steps from ``configs``, then each step, the schedule and
the notification channels."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

from lynx.config.steps import PIPELINE_KEYS, StepContext, build_step
from lynx.config.values import kind_of, shown, unknown_key
from lynx.errors import ConfigError
from lynx.records import Pipeline, Step

if TYPE_CHECKING:
    from lynx.channels import Channel

TOP_LEVEL_KEYS = ("cron", "configs", "steps", "vars", "python", "notify", "max_parallel")
# At most this many steps at once may be asked for.
MAX_PARALLEL = 100_000


def build_pipeline(
    document: Any, source: str, cwd: str, environ: Mapping[str, str] = os.environ, *, matrix_refs: bool = False
) -> Pipeline:
    """The whole document as a Pipeline: top-level keys, named steps expanded, every step and the schedule built.

    Args:
        matrix_refs: the file holds ``${matrix.`` (such references outside a matrix step are refused).
    """
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
    max_parallel = _max_parallel(document.get("max_parallel"), source)
    parallel = matrix_refs or "max_parallel" in document or any(_parallel_keys(raw) for raw in raw_steps)
    if parallel:
        steps = _parallel_steps(raw_steps, context, source, matrix_refs)
    else:
        # A plain chain, as fast as before: no needs to resolve, no combinations.
        steps = tuple(build_step(number, raw, context) for number, raw in enumerate(raw_steps, 1))
    schedule = None
    if "cron" in document:
        from lynx.config.schedules import build_schedule  # only configs with a schedule

        schedule = build_schedule(document["cron"], source)
    channels: tuple[Channel, ...] = ()
    if "notify" in document:
        # Only configs that notify load its rules.
        from lynx.config.notify import build_channels

        channels = build_channels(document["notify"], context)
    return Pipeline(
        source=source,
        steps=steps,
        schedule=schedule,
        channels=channels,
        max_parallel=max_parallel,
        parallel=parallel,
    )


def _parallel_steps(raw_steps: list[Any], context: StepContext, source: str, matrix_refs: bool) -> tuple[Step, ...]:
    """The steps of a config that uses ``needs``, ``matrix`` or ``max_parallel``: each matrix step one step
    per combination, each step's ``needs`` resolved to step numbers."""
    from lynx.config.matrix import combinations, refuse_stray_references
    from lynx.config.needs import resolve_needs

    needs = resolve_needs(raw_steps, source)
    built: list[Step] = []
    # The combinations' mappings live as long as the build: its caches know objects by their id.
    made: list[Any] = []
    for number, raw in enumerate(raw_steps, 1):
        if isinstance(raw, dict) and "matrix" in raw:
            where = f"{source}: step {number}"
            for combination, values in combinations(raw, where):
                made.append(combination)
                built.append(build_step(number, combination, context, matrix=values))
        else:
            if matrix_refs:
                refuse_stray_references(raw, f"{source}: step {number}")
            built.append(build_step(number, raw, context))
    return tuple(replace(step, needs=needs[step.number]) if step.number in needs else step for step in built)


def _parallel_keys(raw: Any) -> bool:
    return isinstance(raw, dict) and any(key in raw for key in PIPELINE_KEYS)


def _max_parallel(value: Any, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PARALLEL:
        raise ConfigError(
            f"{source}: 'max_parallel' must be a whole number from 1 to {MAX_PARALLEL}, not {shown(value)}"
        )
    return int(value)


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
