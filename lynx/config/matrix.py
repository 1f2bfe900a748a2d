"""A step's ``matrix``: one step per combination of its values, each value interpolated as ``${matrix.NAME}``."""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterator

from lynx.config.values import MATRIX_REF, as_written, kind_of
from lynx.errors import ConfigError
from lynx.records import matrix_suffix

# More combinations than this is a typo, not a sweep.
MAX_COMBINATIONS = 10_000
REFERENCE = re.compile(r"\$\{matrix\.([^}]*)\}")
MATRIX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def matrix_values(raw: Any, where: str) -> list[tuple[str, list[Any]]]:
    """The ``matrix`` mapping checked: names to non-empty lists of scalars, at most MAX_COMBINATIONS in all.

    Raises:
        ConfigError: naming the step and the name at fault.
    """
    if not isinstance(raw, dict) or not raw:
        what = "empty" if isinstance(raw, dict) else f"a {kind_of(raw)}"
        raise ConfigError(f"{where}: 'matrix' must be a mapping of names to lists of values, not {what}")
    values: list[tuple[str, list[Any]]] = []
    count = 1
    for name, items in raw.items():
        if not isinstance(name, str) or not MATRIX_NAME.fullmatch(name):
            raise ConfigError(f"{where}: matrix: {name!r} is not a name (letters, digits and '_')")
        if not isinstance(items, list) or not items:
            what = "an empty list" if isinstance(items, list) else f"a {kind_of(items)}"
            raise ConfigError(f"{where}: matrix: '{name}' must be a non-empty list of values, not {what}")
        for item in items:
            if isinstance(item, bool) or as_written(item) is None:
                raise ConfigError(f"{where}: matrix: '{name}' values must be strings or numbers, not {kind_of(item)}")
        count *= len(items)
        if count > MAX_COMBINATIONS:
            raise ConfigError(f"{where}: 'matrix' makes more than {MAX_COMBINATIONS:,} combinations; split the sweep")
        values.append((name, items))
    return values


def combinations(raw: dict[str, Any], where: str) -> Iterator[tuple[dict[str, Any], tuple[tuple[str, str], ...]]]:
    """Each combination of the step ``raw``'s matrix: the step with its ``${matrix.NAME}`` interpolated
    (and without ``matrix``), and the combination's (name, value as written) pairs, in the matrix's order."""
    names_values = matrix_values(raw["matrix"], where)
    names = [name for name, _ in names_values]
    body = {key: value for key, value in raw.items() if key != "matrix"}
    for chosen in itertools.product(*(items for _, items in names_values)):
        values = dict(zip(names, chosen))
        step = _interpolate(body, values, where)
        pairs = tuple((name, str(as_written(value))) for name, value in values.items())
        if "name" not in body or not _refers(body["name"]):
            base = step.get("name") if isinstance(step.get("name"), str) else step.get("script")
            if isinstance(base, str):
                step["name"] = base + matrix_suffix(pairs)
        yield step, pairs


def _refers(value: Any) -> bool:
    return isinstance(value, str) and MATRIX_REF in value


def _interpolate(node: Any, values: dict[str, Any], where: str) -> Any:
    """``node`` with every ``${matrix.NAME}`` replaced: a reference standing alone by the value itself
    (a number stays a number), one inside a string by the value as written."""
    if isinstance(node, dict):
        return {key: _interpolate(value, values, where) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, values, where) for value in node]
    if not isinstance(node, str) or MATRIX_REF not in node:
        return node

    def value_of(name: str) -> Any:
        if name not in values:
            known = ", ".join(values)
            raise ConfigError(f"{where}: '${{matrix.{name}}}': the matrix has no '{name}' (it has: {known})")
        return values[name]

    alone = REFERENCE.fullmatch(node)
    if alone:
        return value_of(alone[1])
    return REFERENCE.sub(lambda match: str(as_written(value_of(match[1]))), node)


def refuse_stray_references(raw: Any, where: str) -> None:
    """A ``${matrix.NAME}`` in a step without a ``matrix`` is a mistake, not text to pass on."""
    if isinstance(raw, dict):
        for value in raw.values():
            refuse_stray_references(value, where)
    elif isinstance(raw, list):
        for value in raw:
            refuse_stray_references(value, where)
    elif _refers(raw):
        found = REFERENCE.search(raw)
        shown = found[0] if found else "${matrix.…}"
        raise ConfigError(f"{where}: '{shown}' is used, but the step has no 'matrix'")
