"""Step-key figures (issue 10): a config with ``timeout`` and ``retries`` vs the same config without,
for a one-shot run, a scheduler between runs, and Lynx while a step runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import psutil
from harness import (
    STAMP_STEP,
    TRIVIAL_STEP,
    Bench,
    BenchError,
    Row,
    SkipFigure,
    cpu_seconds,
    fmt_diff_ms,
    fmt_ms,
    lynx_failed,
    median,
    reap,
    stop,
    wait_for_stamps,
    wakeups,
    write,
)

KEYS = "    timeout: 600\n    retries: 2\n    retry_delay: 1\n    retry_backoff: 2\n"
SLEEP_STEP = "import sys, time; time.sleep(float(sys.argv[1]))\n"


def _config(script: str, arguments: list[str], *, keys: bool, cron: str | None = None) -> str:
    text = f"cron:\n  second: {cron!r}\n" if cron is not None else ""
    text += f"steps:\n  - script: {script}\n"
    if arguments:
        text += f"    arguments: {arguments!r}\n"
    return text + (KEYS if keys else "")


def _once(bench: Bench, cwd: Path) -> Row:
    """A one-step run, with the keys vs without."""
    write(cwd, "keys.yaml", _config("step.py", [], keys=True))
    write(cwd, "plain.yaml", _config("step.py", [], keys=False))
    a, b = bench.interleave(
        lambda: bench.run(bench.lynx_argv("start", "-ni", "-cf", "keys.yaml"), cwd, "lynx start (timeout, retries)"),
        lambda: bench.run(bench.lynx_argv("start", "-ni", "-cf", "plain.yaml"), cwd, "lynx start (plain)"),
    )
    la, lb = median([f.wall for f in a]), median([f.wall for f in b])
    return Row(
        "step-keys: one-shot run, 1 step with timeout + retries vs without",
        fmt_ms(la),
        fmt_ms(lb),
        fmt_diff_ms(la - lb),
        "<= +5 ms (noise)",
        la - lb <= 0.005,
        samples={"lynx_s": [f.wall for f in a], "baseline_s": [f.wall for f in b]},
    )


def _while_running(bench: Bench, cwd: Path) -> Row:
    """Lynx's own CPU and wake-ups while a step sleeps, with a timeout vs without."""
    window = 1.0 if bench.quick else 2.0
    write(cwd, "sleep.py", SLEEP_STEP)
    write(cwd, "sleep-keys.yaml", _config("sleep.py", [str(window + 1)], keys=True))
    write(cwd, "sleep-plain.yaml", _config("sleep.py", [str(window + 1)], keys=False))

    def measure(config: str) -> tuple[float, float]:
        popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", config)
        with errors:
            try:
                process = psutil.Process(popen.pid)
                deadline = time.monotonic() + 30
                while not process.children() and popen.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(0.2)  # past the step's start
                before = cpu_seconds(popen.pid), wakeups(popen.pid) or 0
                started = time.perf_counter()
                time.sleep(window)
                after = cpu_seconds(popen.pid), wakeups(popen.pid) or 0
                wall = time.perf_counter() - started
                code, timed_out = reap(popen, 30)
            finally:
                stop(popen)
            if code != 0 or timed_out:
                raise lynx_failed(f"lynx start -cf {config}", popen, errors)
        return 100 * (after[0] - before[0]) / wall, (after[1] - before[1]) / wall

    a, b = bench.interleave(lambda: measure("sleep-keys.yaml"), lambda: measure("sleep-plain.yaml"), warmup=False)
    cpu_a, cpu_b = median([x[0] for x in a]), median([x[0] for x in b])
    wake_a, wake_b = median([x[1] for x in a]), median([x[1] for x in b])
    return Row(
        f"step-keys: Lynx while a step sleeps ({window:.0f} s), timeout vs none",
        f"{wake_a:.1f} wake-ups/s, {cpu_a:.3f} % CPU",
        f"{wake_b:.1f} wake-ups/s, {cpu_b:.3f} % CPU",
        f"+{wake_a - wake_b:.1f}/s",
        "<= 10 wake-ups/s",
        wake_a <= 10,
        samples={"keys": a, "plain": b},
        note="wake-ups: times any of Lynx's threads was put on a CPU (schedstat); the step's own not counted",
    )


def _idle(bench: Bench, cwd: Path) -> Row:
    """Two schedulers side by side between runs (a fire a minute): with the keys and without."""
    write(cwd, "stamp.py", STAMP_STEP)
    fire = str((int(time.time()) + 4) % 60)
    write(cwd, "idle-keys.yaml", _config("stamp.py", ["keys.txt"], keys=True, cron=fire))
    write(cwd, "idle-plain.yaml", _config("stamp.py", ["plain.txt"], keys=False, cron=fire))
    window = 1.0 if bench.quick else min(8.0, 45.0 / bench.pairs)
    sides = {}
    for side in ("keys", "plain"):
        sides[side] = bench.start_lynx(cwd, "start", "-ni", "-cf", f"idle-{side}.yaml")
    cpu: dict[str, list[float]] = {"keys": [], "plain": []}
    try:
        for side, (popen, errors) in sides.items():
            try:
                wait_for_stamps(cwd / f"{side}.txt", 1, popen, 75, "step-keys idle")
            except BenchError:
                if popen.poll() is not None:
                    raise lynx_failed(f"lynx start -ni -cf idle-{side}.yaml", popen, errors) from None
                raise
        deadline = time.monotonic() + 30
        while any(psutil.Process(p.pid).children() for p, _ in sides.values()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        for _ in range(bench.pairs):
            started = time.perf_counter()
            before = {side: cpu_seconds(popen.pid) for side, (popen, _) in sides.items()}
            time.sleep(window)
            after = {side: cpu_seconds(popen.pid) for side, (popen, _) in sides.items()}
            wall = time.perf_counter() - started
            for side in sides:
                cpu[side].append(100 * (after[side] - before[side]) / wall)
    finally:
        for popen, errors in sides.values():
            stop(popen)
            errors.close()
    ca, cb = median(cpu["keys"]), median(cpu["plain"])
    return Row(
        f"step-keys: idle scheduler CPU, timeout + retries vs none ({window:.0f} s windows)",
        f"{ca:.3f} %",
        f"{cb:.3f} %",
        f"+{ca - cb:.3f} %" if ca >= cb else f"-{cb - ca:.3f} %",
        "<= 0.05 %",
        ca <= 0.05,
        samples={"cpu_percent": cpu, "window_s": window},
    )


def figure_step_keys(bench: Bench) -> list[Row]:
    """A step with ``timeout`` and ``retries`` vs the same without: one-shot, while it runs, idle between runs."""
    cwd = bench.folder("step-keys")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "probe.yaml", _config("step.py", [], keys=True))
    try:
        bench.run(bench.lynx_argv("start", "-ni", "-cf", "probe.yaml"), cwd, "lynx start (timeout, retries)")
    except BenchError as error:
        if "unknown key" in str(error):
            raise SkipFigure(f"this Lynx does not know the keys: {error}") from None
        raise
    return [_once(bench, cwd), _while_running(bench, cwd), _idle(bench, cwd)]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "step-keys": figure_step_keys,
}
