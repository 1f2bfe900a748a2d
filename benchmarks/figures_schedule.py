"""Schedule figures: how late a cron fire starts its step, the idle scheduler, and (--soak) 500 runs."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from typing import Callable

import psutil
from harness import (
    MIB,
    PYTHON,
    STAMP_STEP,
    Bench,
    BenchError,
    Row,
    cpu_seconds,
    fmt_mib,
    fmt_ms,
    kill_tree,
    lynx_failed,
    median,
    ratio,
    reap,
    spawn,
    steps_config,
    stop,
    time_to_first_statement,
    wait_for_stamps,
    write,
)


def figure_cron_delay(bench: Bench) -> list[Row]:
    """Cron ``second: '*/2'``: scheduled second -> the step's first statement, vs spawning it directly."""
    cwd = bench.folder("cron-delay")
    write(cwd, "stamp.py", STAMP_STEP)
    write(cwd, "cron.yaml", steps_config([("stamp.py", ["lynx-stamps.txt"])], cron="*/2"))
    fires = max(bench.pairs, 3 if bench.quick else 5)
    stamps_file = cwd / "lynx-stamps.txt"
    lynx_delays: list[float] = []
    floor_delays: list[float] = []
    popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", "cron.yaml")
    with errors:
        try:
            seen = 0
            while len(lynx_delays) < fires:
                try:
                    stamps = wait_for_stamps(stamps_file, seen + 1, popen, 30, "cron-delay")
                except BenchError:
                    if popen.poll() is not None:
                        raise lynx_failed("lynx start -ni (cron)", popen, errors) from None
                    raise
                for stamp in stamps[seen:]:
                    lynx_delays.append(stamp - 2 * math.floor(stamp / 2))
                seen = len(stamps)
                # The floor: spawn the same step at the next odd second, while Lynx waits for its next fire.
                spawn_at = 2 * math.floor(stamps[-1] / 2) + 1.0
                time.sleep(max(0.0, spawn_at - time.time()))
                floor_delays.append(time_to_first_statement(cwd, bench.step_env, "floor-stamps.txt"))
        finally:
            stop(popen)
    la, lb = median(lynx_delays), median(floor_delays)
    return [
        Row(
            f"cron-delay: '*/2' -> step's first statement ({len(lynx_delays)} fires)",
            fmt_ms(la),
            f"{fmt_ms(lb)} (spawn)",
            f"+{fmt_ms(la - lb)}" if la >= lb else f"-{fmt_ms(lb - la)}",
            "<= floor + 5 ms",
            la <= lb + 0.005,
            samples={"lynx_s": lynx_delays, "floor_s": floor_delays},
            note="the floor: the same step spawned by this harness at the odd seconds between Lynx's fires",
        )
    ]


def _wait_idle(popen: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until Lynx has no step running (the stamp is written a little before the step exits)."""
    deadline = time.monotonic() + timeout
    process = psutil.Process(popen.pid)
    while process.children() and time.monotonic() < deadline:
        time.sleep(0.01)


def figure_idle(bench: Bench) -> list[Row]:
    """The scheduler between runs (a cron firing once a minute): CPU % and RSS, vs a sleeping interpreter."""
    cwd = bench.folder("idle")
    write(cwd, "stamp.py", STAMP_STEP)
    # Fires once a minute, first ~4 s from now: the windows fit in the minute after the first run.
    fire = (int(time.time()) + 4) % 60
    write(cwd, "idle.yaml", steps_config([("stamp.py", ["stamps.txt"])], cron=str(fire)))
    window = 1.0 if bench.quick else min(8.0, 45.0 / bench.pairs)
    popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", "idle.yaml")
    sleeper = spawn([PYTHON, "-c", "import time; time.sleep(3600)"], cwd=cwd, env=bench.env)
    cpu: dict[str, list[float]] = {"lynx": [], "baseline": []}
    rss: dict[str, list[int]] = {"lynx": [], "baseline": []}
    with errors:
        try:
            try:
                wait_for_stamps(cwd / "stamps.txt", 1, popen, 75, "idle")
            except BenchError:
                if popen.poll() is not None:
                    raise lynx_failed("lynx start -ni (cron)", popen, errors) from None
                raise
            _wait_idle(popen)
            time.sleep(0.5)
            for _ in range(bench.pairs):
                start = time.perf_counter()
                before = {"lynx": cpu_seconds(popen.pid), "baseline": cpu_seconds(sleeper.pid)}
                time.sleep(window)
                after = {"lynx": cpu_seconds(popen.pid), "baseline": cpu_seconds(sleeper.pid)}
                wall = time.perf_counter() - start
                for side, pid in (("lynx", popen.pid), ("baseline", sleeper.pid)):
                    cpu[side].append(100 * (after[side] - before[side]) / wall)
                    rss[side].append(psutil.Process(pid).memory_info().rss)
            if popen.poll() is not None:
                raise lynx_failed("lynx start -ni (cron)", popen, errors)
        finally:
            stop(popen)
            kill_tree(sleeper.pid)
            reap(sleeper, 10)
    ca, cb = median(cpu["lynx"]), median(cpu["baseline"])
    ra, rb = median(rss["lynx"]), median(rss["baseline"])
    samples = {"cpu_percent": cpu, "rss": rss, "window_s": window}
    return [
        Row(
            f"idle: scheduler CPU between runs ({window:.0f} s windows)",
            f"{ca:.3f} %",
            f"{cb:.3f} % (sleeping python)",
            f"+{ca - cb:.3f} %",
            "<= 0.05 %",
            ca <= 0.05,
            samples=samples,
            note="CPU time of all of Lynx's threads (per-thread schedstat, ns) over windows after the first run",
        ),
        Row(
            "idle: scheduler RSS between runs",
            fmt_mib(ra),
            f"{fmt_mib(rb)} (sleeping python)",
            f"+{fmt_mib(ra - rb)}",
            "<= 30 MiB",
            ra <= 30 * MIB,
        ),
    ]


def figure_soak(bench: Bench) -> list[Row]:
    """``--soak``: a trivial step every second for 500 runs: RSS and CPU per run, early vs late."""
    cwd = bench.folder("soak")
    write(cwd, "stamp.py", STAMP_STEP)
    write(cwd, "soak.yaml", steps_config([("stamp.py", ["stamps.txt"])], cron="*/1"))
    runs = bench.soak_runs
    span = max(5, min(50, runs // 5))
    marks = sorted({10, 10 + span, runs - span, runs})
    readings: dict[int, tuple[int, float]] = {}
    popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", "soak.yaml")
    print(f"  soak: {runs} runs, one a second (about {runs / 60:.0f} min)", file=sys.stderr, flush=True)
    with errors:
        try:
            for mark in marks:
                try:
                    stamps = wait_for_stamps(cwd / "stamps.txt", mark, popen, runs + 60, "soak")
                except BenchError:
                    if popen.poll() is not None:
                        raise lynx_failed("lynx start -ni (cron)", popen, errors) from None
                    raise
                # Half a second after the fire: the run is over and the next has not begun.
                time.sleep(max(0.0, math.floor(stamps[mark - 1]) + 0.5 - time.time()))
                readings[mark] = (psutil.Process(popen.pid).memory_info().rss, cpu_seconds(popen.pid))
        finally:
            stop(popen)
    first, last = marks[0], marks[-1]
    rss_early, rss_late = readings[first][0], readings[last][0]
    early = (readings[marks[1]][1] - readings[first][1]) / (marks[1] - first)
    late = (readings[last][1] - readings[marks[-2]][1]) / (last - marks[-2])
    growth = rss_late - rss_early
    return [
        Row(
            f"soak: scheduler RSS, run {first} vs run {last} ('*/1')",
            f"{fmt_mib(rss_late)} (run {last})",
            f"{fmt_mib(rss_early)} (run {first})",
            f"+{fmt_mib(growth)}" if growth >= 0 else f"-{fmt_mib(-growth)}",
            "flat (<= +2 MiB), <= 30 MiB",
            growth <= 2 * MIB and rss_late <= 30 * MIB,
            samples={"readings": {str(k): list(v) for k, v in readings.items()}},
        ),
        Row(
            f"soak: Lynx CPU per run, runs {marks[-2]}-{last} vs {first}-{marks[1]}",
            fmt_ms(late),
            fmt_ms(early),
            f"{ratio(late, early):.2f}x",
            "flat (<= 1.25x)",
            late <= 1.25 * early + 0.0005,
        ),
    ]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "cron-delay": figure_cron_delay,
    "idle": figure_idle,
    "soak": figure_soak,
}
