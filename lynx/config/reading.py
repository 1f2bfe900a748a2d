"""Reading a config file's YAML safely: libyaml's safe loader, duplicate keys and merges refused,
numbers and dates kept as written, the keys ``on``/``off``/``yes``/``no`` kept as words, alias bombs
and cycles refused. It knows nothing about steps.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from typing import Any

from lynx.config.values import MATRIX_REF, WrittenDate, WrittenDatetime, WrittenFloat, WrittenInt
from lynx.errors import ConfigError

# An honest config is far below both; a YAML "billion laughs" bomb is far above the second.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_EXPANDED_NODES = 2_000_000
MAX_INTERPOLATED_NODES = 200_000
BOOL_TAG = "tag:yaml.org,2002:bool"
STR_TAG = "tag:yaml.org,2002:str"
# Mapping keys that YAML 1.1 would read as booleans; as values they keep their YAML meaning.
WORD_KEYS = ("on", "off", "yes", "no")


def _loader(yaml: Any) -> Any:
    """libyaml's safe loader, refusing duplicate keys and steps merged into one, keeping numbers' text."""
    from yaml.constructor import ConstructorError
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    flatten = base.flatten_mapping

    class Loader(base):  # type: ignore[misc, valid-type]
        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self.flattened: set[int] = set()

        def flatten_mapping(self, node: Any) -> None:
            # Merging rewrites node.value in place: look at each mapping once, as it was written;
            # flattened once, a mapping has no merge keys left (a merged anchor is flattened again
            # for every step that merges it).
            if id(node) in self.flattened:
                return
            self.check_keys(node)
            flatten(self, node)
            self.flattened.add(id(node))

        def check_keys(self, node: Any) -> None:
            seen: dict[tuple[str, str], Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == BOOL_TAG and key_node.value.lower() in WORD_KEYS:
                    # YAML 1.1 reads a bare 'on:' as true (GitHub Actions' trap): a key keeps its word.
                    key_node.tag = STR_TAG
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                    for item in merged:
                        if isinstance(item, MappingNode):
                            self.flatten_mapping(item)  # its own merges first: what it holds after them counts
                    if len(merged) > 1:
                        steps = [
                            item
                            for item in merged
                            if isinstance(item, MappingNode)
                            and any(isinstance(k, ScalarNode) and k.value == "script" for k, _ in item.value)
                        ]
                        if len(steps) > 1:
                            raise ConstructorError(
                                None,
                                None,
                                f"'<<' merges a list of {len(steps)} steps into one step, which would keep only "
                                "the first; merge each step on its own (- <<: *name for each), or name the "
                                "'configs' entry in 'steps' (steps: [name])",
                                key_node.start_mark,
                            )
                if not isinstance(key_node, ScalarNode):
                    continue
                key = (key_node.tag, key_node.value)
                first = seen.get(key)
                if first is not None:
                    merge = key_node.tag == "tag:yaml.org,2002:merge"
                    hint = "merge several with one list: <<: [*a, *b]" if merge else "YAML would keep only the last"
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key '{key_node.value}' (first at line {first.start_mark.line + 1}); {hint}",
                        key_node.start_mark,
                    )
                seen[key] = key_node

        def construct_yaml_int(self, node: Any) -> int:
            number = WrittenInt(super().construct_yaml_int(node))
            number.text = node.value
            return number

        def construct_yaml_float(self, node: Any) -> float:
            number = WrittenFloat(super().construct_yaml_float(node))
            number.text = node.value
            return number

        def construct_yaml_timestamp(self, node: Any) -> date:
            value = super().construct_yaml_timestamp(node)
            if isinstance(value, datetime):
                fields = (value.year, value.month, value.day, value.hour, value.minute, value.second)
                written: date = WrittenDatetime(*fields, value.microsecond, value.tzinfo)
            else:
                written = WrittenDate(value.year, value.month, value.day)
            written.text = node.value  # type: ignore[attr-defined]
            return written

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)
    Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.construct_yaml_timestamp)
    return Loader


def read_yaml(source: str) -> tuple[Any, int, int]:
    """The file's document, checked for size, duplicate keys, merges, bombs and cycles, and whether it
    interpolates: how many ``${`` it holds, and how many of them are ``${matrix.`` (Lynx's own).

    Raises:
        ConfigError: naming the file (and the line, for YAML errors).
    """
    import yaml

    try:
        size = os.path.getsize(source)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source}: the file is {size} bytes; a config may have at most {MAX_CONFIG_BYTES}")
        with open(source, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ConfigError(f"{source}: cannot read the config file: {error.strerror or error}") from None
    try:
        document = yaml.load(raw, Loader=_loader(yaml))
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
    return document, raw.count(b"${"), raw.count(MATRIX_REF.encode())


def read_value(text: str) -> Any:
    """A YAML text read as the file's values are (numbers and dates keep their text).

    Raises:
        yaml.YAMLError: it is not YAML.
    """
    import yaml

    return yaml.load(text, Loader=_loader(yaml))


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
