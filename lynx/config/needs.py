"""Which steps a step ``needs``: references by name or number checked, resolved to step numbers, cycles refused."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from lynx.config.values import as_written, kind_of, shown
from lynx.errors import ConfigError


def resolve_needs(raw_steps: Sequence[Any], source: str) -> dict[int, tuple[int, ...]]:
    """The steps that say ``needs``, by number, with the numbers of the steps they need (in the order given).

    Raises:
        ConfigError: a reference that is not a step, a step needing itself, or a cycle.
    """
    titles = {number: _title(raw) for number, raw in enumerate(raw_steps, 1)}
    names = step_names(raw_steps)
    needs: dict[int, tuple[int, ...]] = {}
    for number, raw in enumerate(raw_steps, 1):
        if not isinstance(raw, dict) or "needs" not in raw:
            continue
        where = f"{source}: step {number}" + (f" ({titles[number]})" if titles[number] else "")
        needs[number] = _references(raw["needs"], number, names, len(raw_steps), where)
    if needs:
        _refuse_cycles(needs, len(raw_steps), titles, source)
    return needs


def step_names(raw_steps: Sequence[Any]) -> dict[str, list[int]]:
    """The steps' ``name``s as written, each with the numbers of the steps that have it."""
    names: dict[str, list[int]] = {}
    for number, raw in enumerate(raw_steps, 1):
        name = as_written(raw.get("name")) if isinstance(raw, dict) else None
        if name is not None:
            names.setdefault(name, []).append(number)
    return names


def named_steps(names: Mapping[str, Any]) -> str:
    """The names of the named steps, for an error that found none by the name given."""
    return ", ".join(f"'{name}'" for name in names) or "no step has a 'name'"


def _references(value: Any, number: int, names: dict[str, list[int]], count: int, where: str) -> tuple[int, ...]:
    if value is None:
        value = []
    if not isinstance(value, list):
        value = [value]
    numbers: list[int] = []
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool):
            if not 1 <= item <= count:
                raise ConfigError(f"{where}: 'needs': there is no step {item} (the steps are 1 to {count})")
            found = int(item)
        elif isinstance(item, str) and item:
            matches = names.get(item)
            if not matches:
                raise ConfigError(f"{where}: 'needs': no step is named '{item}' (named steps: {named_steps(names)})")
            if len(matches) > 1:
                listed = ", ".join(str(match) for match in matches)
                raise ConfigError(f"{where}: 'needs': '{item}' names steps {listed}: give the step's number")
            found = matches[0]
        else:
            raise ConfigError(
                f"{where}: 'needs' must list step names or numbers, not {shown(item) if item != '' else kind_of(item)}"
            )
        if found == number:
            raise ConfigError(f"{where}: 'needs' names the step itself")
        if found not in numbers:
            numbers.append(found)
    return tuple(numbers)


def _refuse_cycles(needs: dict[int, tuple[int, ...]], count: int, titles: dict[int, str | None], source: str) -> None:
    """Depth first over 'what must end first' (a step without ``needs``: the step before it)."""

    def before(number: int) -> tuple[int, ...]:
        return needs.get(number, (number - 1,) if number > 1 else ())

    state = dict.fromkeys(range(1, count + 1), 0)  # 0 new, 1 on the path, 2 done
    for start in range(1, count + 1):
        if state[start]:
            continue
        path = [start]
        pending = [iter(before(start))]
        state[start] = 1
        while pending:
            following = next(pending[-1], None)
            if following is None:
                state[path.pop()] = 2
                pending.pop()
                continue
            if state[following] == 1:
                cycle = [*path[path.index(following) :], following]
                described = " → ".join(
                    f"step {each}" + (f" ({titles[each]})" if titles[each] else "") for each in cycle
                )
                raise ConfigError(f"{source}: the steps' 'needs' make a cycle: {described} (each needs the next)")
            if state[following] == 0:
                state[following] = 1
                path.append(following)
                pending.append(iter(before(following)))


def _title(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    for key in ("name", "script"):
        text = as_written(raw.get(key))
        if text and "\n" not in text:
            return text
    return None
