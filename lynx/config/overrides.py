"""``KEY=VALUE`` overrides of a config's document, as Hydra users write them: ``vars.lr=0.01``,
``cron.hour=3``, ``steps.2.timeout=600``; ``+key=value`` adds a key the file does not have.

Lists count from 1, as Lynx counts steps (``steps.1`` is Step 1), and a step may also be named
(``steps.train.timeout=600``). Values are read as the file's values are (YAML scalars, numbers kept
as written). The document is changed copy-on-write: what YAML aliases share stays as the file says.
"""

from __future__ import annotations

from typing import Any, Sequence

from lynx.config.values import kind_of
from lynx.errors import ConfigError


def apply_overrides(document: Any, overrides: Sequence[str], source: str) -> Any:
    """``document`` with each override applied in order.

    Raises:
        ConfigError: an override that is not KEY=VALUE, names a key the document does not have
            (with a suggestion, and how to add it), or an index that is not there (saying which are).
    """
    for override in overrides:
        document = _apply(document, override, source)
    return document


def _apply(document: Any, override: str, source: str) -> Any:
    where = f"override {override!r}"
    key, equals, text = override.partition("=")
    adding = key.startswith("+")
    path = key[1:] if adding else key
    if not equals or not path or any(not part for part in path.split(".")):
        raise ConfigError(f"{where}: write KEY=VALUE, KEY a dotted path such as vars.lr or steps.2.timeout")
    value = _value(text)
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: {source} is not a mapping of keys")
    parts = path.split(".")
    root = dict(document)
    container: Any = root
    for position, part in enumerate(parts):
        walked = parts[:position]
        if isinstance(container, dict):
            slot: Any = next((existing for existing in container if str(existing) == part), None)
            if slot is None:
                if not adding:
                    raise ConfigError(f"{where}: {_missing_key(container, part, walked, override)}")
                slot = part
                container[slot] = {}  # '+' makes what the path needs
        else:
            slot = _index(container, part, walked, where)
        if position == len(parts) - 1:
            container[slot] = value
            break
        child = container[slot]
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"{where}: {'.'.join(parts[: position + 1])} is a {kind_of(child)}, which has no keys")
        # Copied on the way down: what YAML aliases share elsewhere stays as the file says.
        container[slot] = child = dict(child) if isinstance(child, dict) else list(child)
        container = child
    return root


def _value(text: str) -> Any:
    """The value as the file would read it: a YAML scalar (numbers keep their text), or a flow list or
    mapping; text YAML cannot read (``*/5``, which YAML takes for an alias) is taken as it is."""
    import yaml

    from lynx.config.reading import read_value

    try:
        return read_value(text)
    except yaml.YAMLError:
        return text


def _missing_key(container: dict[Any, Any], part: str, walked: list[str], override: str) -> str:
    import difflib

    owner = ".".join(walked) or "the config"
    known = [str(key) for key in container]
    close = difflib.get_close_matches(part, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{owner} has no key '{part}' ({hint}to add one, write +{override.lstrip('+')})"


def _index(container: list[Any], part: str, walked: list[str], where: str) -> int:
    """The position ``part`` names in the list: a number from 1, or (in ``steps``) a step's name."""
    owner = ".".join(walked) or "the list"
    count = len(container)
    if part.isdigit():
        number = int(part)
        if 1 <= number <= count:
            return number - 1
        listed = f"1 to {count}" if count else "none"
        if walked == ["steps"]:
            raise ConfigError(f"{where}: there is no step {part} (steps count from 1, as Lynx shows them: {listed})")
        raise ConfigError(f"{where}: {owner} has no item {part} (lists count from 1: its items are {listed})")
    if walked == ["steps"]:
        from lynx.config.needs import named_steps, step_names

        names = step_names(container)
        numbers = names.get(part, [])
        if len(numbers) == 1:
            return numbers[0] - 1
        if numbers:
            raise ConfigError(f"{where}: several steps are named '{part}': give the step's number")
        raise ConfigError(f"{where}: no step is named '{part}' (steps count from 1; named steps: {named_steps(names)})")
    raise ConfigError(f"{where}: {owner} is a list: give a number from 1 to {count}, not '{part}'")
