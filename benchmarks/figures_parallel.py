"""Parallel steps (issue 18): many trivial steps side by side vs ``xargs -P``, planning a large DAG, and
Lynx's own CPU and wake-ups while 8 steps run."""

from __future__ import annotations

import contextlib
import shlex
import time
from pathlib import Path
from typing import Callable

from harness import (
    PYTHON,
    STAMP_STEP,
    TRIVIAL_STEP,
    Bench,
    BenchError,
    Row,
    cpu_seconds,
    fmt_ms,
    lynx_failed,
    median,
    ratio,
    stop,
    wait_for_stamps,
    wakeups,
    write,
)

PARALLEL = 8


def _sweep(script: str, count: int, arguments: str = "") -> str:
    """One step made ``count`` independent steps by a matrix."""
    values = ", ".join(str(number) for number in range(count))
    lines = [f"  - script: {script}", f"    matrix: {{n: [{values}]}}"]
    if arguments:
        lines.append(f"    arguments: [{arguments}]")
    return "\n".join(lines) + "\n"


def figure_parallel(bench: Bench) -> list[Row]:
    """200 trivial steps with max_parallel 8 vs ``xargs -P 8`` running the same 200 commands (quick: 50)."""
    cwd = bench.folder("parallel200")
    count = 50 if bench.quick else 200
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "sweep.yaml", f"max_parallel: {PARALLEL}\nsteps:\n" + _sweep("step.py", count, "'${matrix.n}'"))
    xargs = f"seq {count} | xargs -P {PARALLEL} -n 1 {shlex.quote(PYTHON)} step.py"
    a, b = bench.interleave(
        lambda: bench.run(bench.lynx_argv("start", "-ni", "-cf", "sweep.yaml"), cwd, f"lynx start ({count} steps)"),
        lambda: bench.run(["sh", "-c", xargs], cwd, f"xargs -P {PARALLEL}"),
    )
    la, lb = median([f.wall for f in a]), median([f.wall for f in b])
    value = ratio(la, lb)
    return [
        Row(
            f"parallel: {count} trivial steps, max_parallel {PARALLEL}, vs `xargs -P {PARALLEL}`",
            fmt_ms(la),
            fmt_ms(lb),
            f"{value:.2f}x",
            "<= 1.15x",
            value <= 1.15,
            samples={"lynx_s": [f.wall for f in a], "baseline_s": [f.wall for f in b]},
        )
    ]


def _first_step_after(bench: Bench, cwd: Path, config: str, what: str) -> Callable[[], float]:
    """Seconds from launching ``lynx start -ni -cf config`` to its first step's first statement."""
    stamps = cwd / "stamps.txt"

    def measure() -> float:
        with contextlib.suppress(FileNotFoundError):
            stamps.unlink()
        launched = time.time()
        popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", config)
        with errors:
            try:
                first = wait_for_stamps(stamps, 1, popen, 120, what, interval=0.001)[0]
            except BenchError:
                if popen.poll() is not None:
                    raise lynx_failed(what, popen, errors) from None
                raise
            finally:
                stop(popen)
        return first - launched

    return measure


def figure_plan(bench: Bench) -> list[Row]:
    """Launch -> first step for a 10,000-step DAG (a matrix sweep) and a 20,000-step one (two sweeps, the
    second needing the first): at most 1 s, and linear (20,000 steps at most 2.2 times 10,000)."""
    cwd = bench.folder("plan")
    write(cwd, "stamp.py", STAMP_STEP)
    size = 1_000 if bench.quick else 10_000
    one = f"max_parallel: 1\nsteps:\n{_sweep('stamp.py', size, 'stamps.txt')}"
    two = one + _sweep("stamp.py", size, "stamps.txt").replace("  - script", "  - needs: [1]\n    script", 1)
    write(cwd, "one.yaml", one)
    write(cwd, "two.yaml", two)
    a, b = bench.interleave(
        _first_step_after(bench, cwd, "one.yaml", f"{size:,} steps"),
        _first_step_after(bench, cwd, "two.yaml", f"{2 * size:,} steps"),
    )
    la, lb = median(a), median(b)
    value = ratio(lb, la)
    return [
        Row(
            f"plan: launch -> first step, {size:,} vs {2 * size:,} matrix steps",
            fmt_ms(la),
            f"{fmt_ms(lb)} ({2 * size:,})",
            f"{value:.2f}x",
            "<= 1 s and <= 2.20x",
            la <= 1.0 and value <= 2.2,
            samples={"lynx_s": a, "double_s": b},
            note="both sides include the interpreter's start-up and the first step's own",
        )
    ]


CHATTY = """\
import sys, time
for tick in range(int(sys.argv[1])):
    print(f"tick {tick}", flush=True)
    time.sleep(0.25)
"""


def figure_parallel_cpu(bench: Bench) -> list[Row]:
    """Lynx's CPU time and wake-ups per second while 8 steps run side by side, each printing 4 lines a second."""
    cwd = bench.folder("parallel-cpu")
    ticks = 8 if bench.quick else 16
    write(cwd, "chatty.py", CHATTY)
    write(
        cwd,
        "eight.yaml",
        f"max_parallel: {PARALLEL}\nsteps:\n" + _sweep("chatty.py", PARALLEL, f"'{ticks}'"),
    )
    samples: list[tuple[float, float]] = []

    def run() -> None:
        popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", "eight.yaml")
        with errors:
            try:
                time.sleep(0.5)  # past start-up: the steps are running
                cpu, woken, began = cpu_seconds(popen.pid), wakeups(popen.pid) or 0, time.monotonic()
                time.sleep(ticks * 0.25 - 1.0)
                wall = time.monotonic() - began
                samples.append(((cpu_seconds(popen.pid) - cpu) / wall, ((wakeups(popen.pid) or 0) - woken) / wall))
            finally:
                if popen.wait(timeout=60) != 0:
                    raise lynx_failed("lynx start (8 chatty steps)", popen, errors)

    for _ in range(max(3, bench.pairs // 2)):
        run()
    cpu = median([each[0] for each in samples])
    woken = median([each[1] for each in samples])
    lines = PARALLEL * 4
    per_line = woken / lines
    return [
        Row(
            f"parallel-cpu: Lynx while {PARALLEL} steps run, each printing 4 lines/s",
            f"{100 * cpu:.2f} % CPU, {woken:.0f} wake-ups/s",
            f"{lines} lines/s",
            f"{per_line:.1f} wake-ups per line",
            "<= 3 wake-ups per line",
            per_line <= 3,
            samples={"cpu_share": [each[0] for each in samples], "wakeups_per_s": [each[1] for each in samples]},
            note="wake-ups: times any of Lynx's threads was put on a CPU (schedstat); a line wakes the thread "
            "that reads its step's pipe, which then writes it to the screen",
        )
    ]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "parallel": figure_parallel,
    "plan": figure_plan,
    "parallel-cpu": figure_parallel_cpu,
}
