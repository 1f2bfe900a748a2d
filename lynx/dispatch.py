"""The scheduler of ready steps: starts each step once what it waits for has ended, at most ``limit`` at once,
in config order among the ready ones, and stops starting new ones once a step has failed.

It knows nothing of processes, output or logs: it hands a step's index to ``run_one`` (the runner's,
which launches it, with its retries) and is told how it ended. A plain chain is its simplest case:
one step at a time, run in the calling thread.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

from lynx.ending import signals_deferred
from lynx.plan import Plan, side_by_side

# What run_one says of a step; and what the dispatcher says of those it did not run.
OK = "ok"
FAILED = "failed"
# Failed, but the step's continue_on_error lets the others go on.
TOLERATED = "tolerated"
INTERRUPTED = "interrupted"
# Not run: it needs a step that failed or was skipped.
SKIPPED = "skipped"


def dispatch(
    plan: Plan,
    todo: Sequence[bool],
    run_one: Callable[[int], str],
    *,
    limit: int,
    stopping: Callable[[], bool],
    on_skip: Callable[[int, int], None],
    on_interrupt: Callable[[BaseException], None],
) -> list[str | None]:
    """Run the steps whose ``todo`` is true, each once what it waits for has ended.

    Args:
        plan: the steps' groups and what each waits for.
        todo: by step index: run it; a step not to run counts as succeeded for those that need it.
        run_one: runs step ``index`` to its end (retries included), returning OK, FAILED, TOLERATED or
            INTERRUPTED; called in this thread when at most one step can run at a time, else in a
            thread of its own per step.
        limit: at most this many steps at once.
        stopping: true once no step may start any more (Lynx is being stopped).
        on_skip: told ``(index, group)`` for a step skipped because it needs group ``group``, which
            failed or was skipped.
        on_interrupt: told about Ctrl+C or a termination signal arriving while steps run in threads; it
            must end them. The exception propagates once every running step has reported its end.

    Returns:
        By step index: how it ended, SKIPPED, or None when it never started (not to do, or the run
        stopped first).
    """
    if plan.chain:
        # One step ready at a time: a list is the queue, and a plain config imports nothing more.
        push: Callable[[list[int], int], None] = list.append
        pop: Callable[[list[int]], int] = lambda ready: ready.pop(0)  # noqa: E731
        heapify: Callable[[list[int]], None] = list.sort
    else:
        import heapq

        push, pop, heapify = heapq.heappush, heapq.heappop, heapq.heapify
    ended: list[str | None] = [None] * len(todo)
    groups = len(plan.numbers)
    left = [sum(1 for index in members if todo[index]) for members in plan.members]
    waiting = [len(waits) for waits in plan.waits_for]
    bad = [False] * groups
    ready: list[int] = []
    finished_groups: list[int] = []
    for position in range(groups):
        if left[position] == 0:
            finished_groups.append(position)
    for position in range(groups):
        if waiting[position] == 0:
            ready += [index for index in plan.members[position] if todo[index]]
    heapify(ready)
    halted = False

    def finish_groups() -> None:
        """Let the groups that waited for the finished ones go on, or skip those that needed them."""
        while finished_groups:
            position = finished_groups.pop()
            for dependent in plan.dependents[position]:
                if plan.strict[dependent] and bad[position]:
                    if left[dependent] == 0 and bad[dependent]:
                        continue  # skipped already
                    for index in plan.members[dependent]:
                        if todo[index] and ended[index] is None:
                            ended[index] = SKIPPED
                            on_skip(index, position)
                    if left[dependent]:
                        left[dependent] = 0
                        bad[dependent] = True
                        finished_groups.append(dependent)
                    continue
                waiting[dependent] -= 1
                if waiting[dependent] == 0 and left[dependent]:
                    for index in plan.members[dependent]:
                        if todo[index] and ended[index] is None:
                            push(ready, index)

    def record(index: int, outcome: str) -> None:
        nonlocal halted
        ended[index] = outcome
        position = plan.group_of[index]
        if outcome != OK:
            bad[position] = True
        if outcome in (FAILED, INTERRUPTED):
            halted = True
        left[position] -= 1
        if left[position] == 0:
            finished_groups.append(position)
            finish_groups()

    finish_groups()
    if not side_by_side(plan, limit):
        while ready and not halted and not stopping():
            index = pop(ready)
            record(index, run_one(index))
        return ended

    import queue

    done: queue.SimpleQueue[tuple[int, str | BaseException]] = queue.SimpleQueue()
    running: set[int] = set()

    def work(index: int) -> None:
        try:
            outcome: str | BaseException = run_one(index)
        except BaseException as error:  # handed to the dispatching thread
            outcome = error
        done.put((index, outcome))

    problem: BaseException | None = None
    try:
        while True:
            while ready and len(running) < limit and not halted and not stopping():
                index = pop(ready)
                running.add(index)
                thread = threading.Thread(target=work, args=(index,), name=f"lynx-step-{index}", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had (RLIMIT_NPROC): run it here, as a chain would
                    work(index)
            if not running:
                break
            index, outcome = done.get()
            running.discard(index)
            if isinstance(outcome, BaseException):
                problem = problem or outcome
                outcome = INTERRUPTED
            record(index, outcome)
            if problem is not None:
                halted = True
    except BaseException as error:  # Ctrl+C or a termination signal in this thread
        halted = True
        with signals_deferred(reraise=False):
            on_interrupt(error)
            while running:
                index, outcome = done.get()
                running.discard(index)
                record(index, outcome if isinstance(outcome, str) else INTERRUPTED)
        raise
    if problem is not None:
        raise problem
    return ended
