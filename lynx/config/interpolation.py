"""OmegaConf ``${...}`` interpolation of a config's document; OmegaConf is imported only by files that interpolate."""

from __future__ import annotations

import os
import re
from typing import Any

from lynx.config.values import MATRIX_REF, WRITTEN
from lynx.errors import ConfigError
from lynx.records import FromEnvironment


def resolve_interpolations(document: Any, source: str) -> Any:
    """Resolve OmegaConf ``${...}`` interpolations; only configs that use them pay for OmegaConf.

    OmegaConf takes only plain values, so numbers and dates go through it as placeholders and come
    back as the very objects the file made: a ``${vars.n}`` that stands alone is that number, one
    inside a string is the number's text as written (``python${vars.py}`` with ``py: 3.10``:
    ``python3.10``, where YAML 1.1 would say 3.1).

    A string whose value was read from the environment (``${oc.env:…}``, also through another key)
    comes back as a :class:`FromEnvironment` that remembers its text as written.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    written: list[Any] = []
    # A mark no string of the file can hold by chance (a NUL and random digits).
    mark = f"\0{os.urandom(8).hex()}:"
    placeholder = re.compile(re.escape(mark) + "([0-9]+)\0")
    matrix_mark = f"\0{os.urandom(8).hex()}m"
    names_environment = False

    def hide(node: Any) -> Any:
        nonlocal names_environment
        if isinstance(node, dict):
            return {hide(key): hide(value) for key, value in node.items()}
        if isinstance(node, list):
            return [hide(value) for value in node]
        if isinstance(node, WRITTEN):
            written.append(node)
            return f"{mark}{len(written) - 1}\0"
        if isinstance(node, str) and MATRIX_REF in node:
            # A matrix step's own values: interpolated per combination (lynx.config.matrix), after this.
            node = node.replace(MATRIX_REF, matrix_mark)
        if isinstance(node, str) and "oc.env" in node:
            names_environment = True
        return node

    def restore(node: Any) -> Any:
        if isinstance(node, dict):
            return {restore(key): restore(value) for key, value in node.items()}
        if isinstance(node, list):
            return [restore(value) for value in node]
        if isinstance(node, str) and matrix_mark in node:
            node = node.replace(matrix_mark, MATRIX_REF)
        if isinstance(node, str) and mark in node:
            alone = placeholder.fullmatch(node)
            if alone:
                return written[int(alone[1])]
            return placeholder.sub(lambda match: written[int(match[1])].text, node)
        return node

    try:
        config = OmegaConf.create(hide(document))
        resolved = restore(OmegaConf.to_container(config, resolve=True))
        # Only a file that names the environment pays for looking which values read it.
        for path, text in (_read_from_environment(config) if names_environment else {}).items():
            _mark_from_environment(resolved, [restore(key) for key in path], restore(text))
        return resolved
    except OmegaConfBaseException as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        where = _interpolation_key(error, document)
        raise ConfigError(f"{source}: {where}cannot resolve an interpolation: {message}") from None


# A relative key in an interpolation (${.x}, ${..x}, ${oc.select:.x}): its meaning depends on where it stands.
_RELATIVE_KEY = re.compile(r"[{:,]\s*\.")


def _read_from_environment(config: Any) -> dict[tuple[Any, ...], str]:
    """Where ``config`` holds a value whose resolution reads the environment (``${oc.env:…}``, also
    through other keys), and that value's interpolation as written.

    Each interpolation is resolved again on its own, with OmegaConf's ``oc.env`` resolver wrapped to
    say that it was called: values are not changed on their way (``${oc.decode:${oc.env:N}}`` still
    decodes), and a key that reads the environment through another (``${vars.token}``) is found too.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.basecontainer import BaseContainer

    # OmegaConf's registry of resolvers (a class attribute since 2.0); its public register functions
    # differ between versions, and a wrapper around the registered entry works with all of them.
    resolvers = getattr(BaseContainer, "_resolvers", None)
    original = resolvers.get("oc.env") if isinstance(resolvers, dict) else None
    reads: list[bool] = []

    def recording_env(*args: Any, **kwargs: Any) -> Any:
        reads.append(True)
        return original(*args, **kwargs)  # type: ignore[misc]

    found: dict[tuple[Any, ...], str] = {}
    on_path: set[int] = set()
    # Whether an interpolation reads the environment, by its text, for texts that mean the same
    # wherever they stand (no relative key such as ${.x}): thousands of steps often share a few.
    known: dict[str, bool] = {}

    def walk(container: Any, path: tuple[Any, ...]) -> None:
        if id(container) in on_path:  # a key whose interpolation leads back to a container above it
            return
        on_path.add(id(container))
        keys = list(container.keys()) if isinstance(container, DictConfig) else range(len(container))
        for key in keys:
            node = container._get_node(key)
            if not OmegaConf.is_interpolation(container, key):  # type: ignore[arg-type]  # keys are str or int
                if isinstance(node, (DictConfig, ListConfig)):
                    walk(node, (*path, key))
                continue
            text = str(node._value())
            here = (*path, key)
            if text in known:
                if known[text]:
                    found[here] = text
                continue
            reads.clear()
            value = container[key]
            if isinstance(value, (DictConfig, ListConfig)):
                walk(value, (*path, key))
                continue
            # Without the registry to wrap, every interpolation counts as one that reads the environment.
            from_environment = bool(reads) or original is None
            if from_environment:
                found[here] = text
            if not _RELATIVE_KEY.search(text):
                known[text] = from_environment
        on_path.discard(id(container))

    if original is not None:
        resolvers["oc.env"] = recording_env  # type: ignore[index]
    try:
        walk(config, ())
    finally:
        if original is not None:
            resolvers["oc.env"] = original  # type: ignore[index]
    return found


def _mark_from_environment(document: Any, path: list[Any], written: str) -> None:
    """Make the string at ``path`` in ``document`` a FromEnvironment that shows as ``written``."""
    *parents, last = path
    container = document
    for key in parents:
        container = container[key]
    value = container[last]
    # A value OmegaConf made something else of (``${oc.decode:…}`` gives numbers) has no text to keep.
    if isinstance(value, str):
        container[last] = FromEnvironment(value, written)


def _interpolation_key(error: Any, document: Any) -> str:
    """Where an interpolation failed, as the other errors say it: ``step 2 (train.py): env.A: ``."""
    key = getattr(error, "full_key", None)
    if not key:
        return ""
    match = re.match(r"steps\[([0-9]+)\]\.?(.*)", str(key))
    if match is None:
        return f"{key}: "
    number = int(match[1]) + 1
    steps = document.get("steps") if isinstance(document, dict) else None
    raw = steps[number - 1] if isinstance(steps, list) and number <= len(steps) else None
    script = raw.get("script") if isinstance(raw, dict) else None
    where = f"step {number} ({script})" if isinstance(script, str) else f"step {number}"
    return f"{where}: {match[2]}: " if match[2] else f"{where}: "
