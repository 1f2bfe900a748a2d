"""Which steps wait for which: a pipeline's steps as groups (one per config step, a matrix step's combinations
together), the groups each one waits for, and the waves of steps that can run side by side.

Dependencies are kept between groups, not between steps: a sweep of 10,000 combinations that the next
sweep waits for costs 10,000 links, not 10,000 squared.
"""

from __future__ import annotations

import os

from lynx.records import Pipeline


class Plan:
    """The groups of a pipeline's steps and how they wait for each other.

    A group is one config step: its number, and the indexes (into ``pipeline.steps``) of the steps made
    from it (one, or one per matrix combination). A plain class, not a dataclass: every run makes one,
    and a dataclass costs a run its creation at import.
    """

    __slots__ = ("chain", "dependents", "group_of", "members", "numbers", "strict", "waits_for")

    def __init__(
        self,
        numbers: tuple[int, ...],
        members: tuple[tuple[int, ...], ...],
        waits_for: tuple[tuple[int, ...], ...],
        strict: tuple[bool, ...],
        dependents: tuple[tuple[int, ...], ...],
        group_of: tuple[int, ...],
        chain: bool | None = None,
    ) -> None:
        self.numbers = numbers
        self.members = members
        # For each group, the groups it waits for (by position in ``numbers``).
        self.waits_for = waits_for
        # The group said ``needs``: what it waits for must have succeeded. Else it follows the step
        # before it, which only has to have ended (as ever: a failure that ``continue_on_error`` lets
        # go does not stop it).
        self.strict = strict
        # For each group, the groups that wait for it.
        self.dependents = dependents
        # The position of each step's group, by step index.
        self.group_of = group_of
        # At most one step can ever be ready at a time: each group one step, each following the one before.
        self.chain = (
            chain
            if chain is not None
            else all(len(each) == 1 for each in members)
            and all(waits == ((position - 1,) if position else ()) for position, waits in enumerate(waits_for))
        )


def make_plan(pipeline: Pipeline) -> Plan:
    """The plan of ``pipeline``'s steps (a plain config is a chain)."""
    steps = pipeline.steps
    count = len(steps)
    if all(step.needs is None for step in steps) and len({step.number for step in steps}) == count:
        # No needs and no matrix (the common case, made in one pass): each step its own group, each
        # following the one before.
        return Plan(
            numbers=tuple(step.number for step in steps),
            members=tuple((index,) for index in range(count)),
            waits_for=tuple((index - 1,) if index else () for index in range(count)),
            strict=(False,) * count,
            dependents=tuple((index + 1,) if index + 1 < count else () for index in range(count)),
            group_of=tuple(range(count)),
            chain=True,
        )
    numbers: list[int] = []
    members: list[list[int]] = []
    group_of: list[int] = []
    position_of: dict[int, int] = {}
    for index, step in enumerate(pipeline.steps):
        position = position_of.get(step.number)
        if position is None:
            position = position_of[step.number] = len(numbers)
            numbers.append(step.number)
            members.append([])
        members[position].append(index)
        group_of.append(position)
    waits_for: list[tuple[int, ...]] = []
    strict: list[bool] = []
    for position in range(len(numbers)):
        needs = pipeline.steps[members[position][0]].needs
        if needs is None:
            waits_for.append((position - 1,) if position else ())
            strict.append(False)
        else:
            waits_for.append(tuple(position_of[each] for each in needs))
            strict.append(True)
    dependents: list[list[int]] = [[] for _ in numbers]
    for position, waits in enumerate(waits_for):
        for each in waits:
            dependents[each].append(position)
    return Plan(
        numbers=tuple(numbers),
        members=tuple(tuple(each) for each in members),
        waits_for=tuple(waits_for),
        strict=tuple(strict),
        dependents=tuple(tuple(each) for each in dependents),
        group_of=tuple(group_of),
    )


def waves(plan: Plan) -> list[list[int]]:
    """The groups (by position) in waves: each wave's groups wait only for groups of earlier waves, so
    the steps of one wave can run side by side (Kahn's order, each wave in config order)."""
    waiting = [len(waits) for waits in plan.waits_for]
    wave = [position for position, count in enumerate(waiting) if count == 0]
    found = []
    while wave:
        found.append(wave)
        following = []
        for position in wave:
            for dependent in plan.dependents[position]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    following.append(dependent)
        wave = sorted(following)
    return found


def parallel_limit(pipeline: Pipeline) -> int:
    """At most this many steps at once: ``max_parallel``, else the CPUs Lynx may use."""
    if pipeline.max_parallel is not None:
        return pipeline.max_parallel
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]  # Linux
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def side_by_side(plan: Plan, limit: int) -> bool:
    """More than one step may run at once, so their output lines carry the step's tag."""
    return limit > 1 and not plan.chain
