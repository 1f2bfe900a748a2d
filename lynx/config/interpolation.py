"""OmegaConf ``${...}`` interpolation of a config's document; OmegaConf is imported only by files that interpolate."""

from __future__ import annotations

import os
import re
from typing import Any

from lynx.config.values import WRITTEN
from lynx.errors import ConfigError

MATRIX = "${matrix."


def resolve_interpolations(document: Any, source: str) -> Any:
    """Resolve OmegaConf ``${...}`` interpolations; only configs that use them pay for OmegaConf.

    OmegaConf takes only plain values, so numbers and dates go through it as placeholders and come
    back as the very objects the file made: a ``${vars.n}`` that stands alone is that number, one
    inside a string is the number's text as written (``python${vars.py}`` with ``py: 3.10``:
    ``python3.10``, where YAML 1.1 would say 3.1).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    written: list[Any] = []
    # A mark no string of the file can hold by chance (a NUL and random digits).
    mark = f"\0{os.urandom(8).hex()}:"
    placeholder = re.compile(re.escape(mark) + "([0-9]+)\0")
    matrix_mark = f"\0{os.urandom(8).hex()}m"

    def hide(node: Any) -> Any:
        if isinstance(node, dict):
            return {hide(key): hide(value) for key, value in node.items()}
        if isinstance(node, list):
            return [hide(value) for value in node]
        if isinstance(node, WRITTEN):
            written.append(node)
            return f"{mark}{len(written) - 1}\0"
        if isinstance(node, str) and MATRIX in node:
            # A matrix step's own values: interpolated per combination (lynx.config.matrix), after this.
            return node.replace(MATRIX, matrix_mark)
        return node

    def restore(node: Any) -> Any:
        if isinstance(node, dict):
            return {restore(key): restore(value) for key, value in node.items()}
        if isinstance(node, list):
            return [restore(value) for value in node]
        if isinstance(node, str) and matrix_mark in node:
            node = node.replace(matrix_mark, MATRIX)
        if isinstance(node, str) and mark in node:
            alone = placeholder.fullmatch(node)
            if alone:
                return written[int(alone[1])]
            return placeholder.sub(lambda match: written[int(match[1])].text, node)
        return node

    try:
        return restore(OmegaConf.to_container(OmegaConf.create(hide(document)), resolve=True))
    except OmegaConfBaseException as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        where = _interpolation_key(error, document)
        raise ConfigError(f"{source}: {where}cannot resolve an interpolation: {message}") from None


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
