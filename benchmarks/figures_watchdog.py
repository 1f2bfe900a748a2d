"""Watchdog figures (issue 15, "no step left unsupervised"): what the watchdog costs a run (two forks
and a socket pair) and a step (two messages, two wake-ups of the watchdog), timed inside a process
of Lynx's size, and a plain config's one-shot run now vs the Lynx before it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

from figures_operations import _old_lynx, _probe_env
from harness import (
    PYTHON,
    REPO,
    TRIVIAL_STEP,
    Bench,
    BenchError,
    Row,
    fmt_diff_ms,
    fmt_mib,
    fmt_ms,
    median,
    ratio,
    run_chain,
    steps_config,
    write,
)

# The last commit before the watchdog (and the SLURM job records): a plain config's runs then.
BEFORE = "8c505f5"
# Runs in a process of its own, with what a one-shot run has imported (the size a fork copies):
# the watchdog started and closed `runs` times, and told about `steps` real steps. Prints one JSON object.
PROBE = """\
import json, os, subprocess, sys, time
runs, steps = int(sys.argv[1]), int(sys.argv[2])
import lynx.cli, lynx.commands.start, lynx.runner  # what a one-shot run has loaded when it forks
from lynx.config import load_pipeline
load_pipeline("one-step.yaml")
from lynx.children import process_start
from lynx.watchdog import start_watchdog
import psutil

# What a run waits for: the fork; then, after its own set-up (logging, the output relay: about 3 ms in
# a real run, here a sleep of 5 ms), the process in between; at its end, closing the pipe.
per_run = []
for _ in range(runs):
    started = time.perf_counter()
    watchdog = start_watchdog(grace=5.0, log_file=None)
    forked = time.perf_counter()
    time.sleep(0.005)
    waited = time.perf_counter()
    watchdog.adopted()
    watchdog.close()
    per_run.append(forked - started + time.perf_counter() - waited)
    time.sleep(0.01)

def find_watchdog():
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "lynx-watchdog" and f"PID {os.getpid()})" in " ".join(process.info["cmdline"] or []):
            return process
def schedstat(pid):
    with open(f"/proc/{pid}/schedstat") as handle:
        return [int(word) for word in handle.read().split()]

import resource
children = resource.getrusage(resource.RUSAGE_CHILDREN)
watchdog = start_watchdog(grace=5.0, log_file=None)
watchdog.adopted()
after_sh = resource.getrusage(resource.RUSAGE_CHILDREN)
sh_cpu = after_sh.ru_utime + after_sh.ru_stime - children.ru_utime - children.ru_stime
deadline = time.monotonic() + 10
while (found := find_watchdog()) is None and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.3)
uss = found.memory_full_info().uss
start_cpu = schedstat(found.pid)[0] / 1e9 + sh_cpu
before = schedstat(found.pid)
told, spawned = [], []
for _ in range(steps):
    # As run_step does: told once the process exists (with the pidfd run_step opens anyway, to
    # watch it), and again once it has been reaped.
    started = time.perf_counter()
    child = subprocess.Popen(["true"])
    pidfd = os.pidfd_open(child.pid)
    forked = time.perf_counter()
    watchdog.step_started(child.pid, "Step 1 (step.py)", None, pidfd)
    told_start = time.perf_counter()
    child.wait()
    reaped = time.perf_counter()
    watchdog.step_ended(child.pid)
    told.append(told_start - forked + time.perf_counter() - reaped)
    os.close(pidfd)
    spawned.append(forked - started + reaped - told_start)
time.sleep(0.2)
after = schedstat(found.pid)
watchdog.close()
cpu_per_step = (after[0] - before[0]) / 1e9 / steps
wakeups_per_step = (after[2] - before[2]) / steps
print(json.dumps({"per_run": per_run, "told": told, "spawned": spawned, "uss": uss, "start_cpu": start_cpu,
                  "cpu_per_step": cpu_per_step, "wakeups_per_step": wakeups_per_step}))
"""


def _probe(bench: Bench, cwd: Path, runs: int, steps: int) -> dict[str, object]:
    result = subprocess.run(
        [PYTHON, "probe.py", str(runs), str(steps)],
        cwd=cwd,
        env=_probe_env(bench),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        tail = " / ".join(result.stderr.strip().splitlines()[-3:])
        raise BenchError(f"watchdog probe: exited with {result.returncode}: {tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def figure_watchdog(bench: Bench) -> list[Row]:
    """Per run and per step, timed in process; a whole one-shot run now vs before the watchdog."""
    cwd = bench.folder("watchdog")
    scripts = [f"step_{number:02d}.py" for number in range(1, 21)]
    for script in scripts:
        write(cwd, script, TRIVIAL_STEP)
    write(cwd, "one-step.yaml", steps_config([(scripts[0], [])]))
    write(cwd, "steps20.yaml", steps_config([(script, []) for script in scripts]))
    write(cwd, "probe.py", PROBE)
    runs, steps = (20, 100) if bench.quick else (100, 1000)
    probes = [_probe(bench, cwd, runs, steps) for _ in range(bench.pairs)]
    per_run = median([median(probe["per_run"]) for probe in probes])  # type: ignore[arg-type]
    told = median([median(probe["told"]) for probe in probes])  # type: ignore[arg-type]
    spawned = median([median(probe["spawned"]) for probe in probes])  # type: ignore[arg-type]
    cpu = median([float(probe["cpu_per_step"]) for probe in probes])  # type: ignore[arg-type]
    woken = median([float(probe["wakeups_per_step"]) for probe in probes])  # type: ignore[arg-type]
    uss = median([float(probe["uss"]) for probe in probes])  # type: ignore[arg-type]
    start_cpu = median([float(probe["start_cpu"]) for probe in probes])  # type: ignore[arg-type]
    rows = [
        Row(
            "watchdog: started and closed, once per run (posix_spawn of sh, which starts it and exits)",
            fmt_ms(per_run),
            "0 (none before)",
            fmt_diff_ms(per_run),
            "<= 2 ms",
            per_run <= 0.002,
            samples={"per_run_s": [median(probe["per_run"]) for probe in probes]},  # type: ignore[arg-type]
            note=f"what Lynx waits for, timed inside a process that has imported what a one-shot run has: the "
            f"spawn, then (after Lynx's own set-up, here 5 ms) the sh in between, and closing the socket; on "
            f"another CPU, the watchdog's own start (sh, python -I -S) takes {fmt_ms(start_cpu)} of CPU time, "
            f"and its memory of its own (USS) while it waits is {fmt_mib(uss)}",
        ),
        Row(
            "watchdog: told about one step (start and end), vs spawning and reaping `true`",
            f"{told * 1e6:.0f} us",
            f"{fmt_ms(spawned)} (spawn + reap)",
            f"{100 * told / spawned:.1f} %",
            "<= 10 % of a bare spawn",
            told <= 0.10 * spawned,
            samples={"told_s": told, "spawned_s": spawned, "watchdog_cpu_s": cpu, "watchdog_wakeups": woken},
            note=f"Lynx's side: two messages on a socket, the first passing the step's pidfd (which run_step "
            f"opens anyway); the watchdog's side, on its own CPU time: {cpu * 1e6:.0f} us and {woken:.1f} "
            "wake-ups per step",
        ),
    ]
    old = _old_lynx(bench.root, BEFORE)
    for label, config in (("1 step", "one-step.yaml"), ("20 steps", "steps20.yaml")):
        argv = [PYTHON, "-m", "lynx", "start", "-ni", "-cf", config]

        def run(source: Path, what: str, argv: list[str] = argv) -> float:
            return run_chain([argv], cwd=cwd, env=_probe_env(bench, source), timeout=bench.timeout, what=what).wall

        a, b = bench.interleave(lambda: run(REPO, f"lynx ({label})"), lambda: run(old, f"lynx {BEFORE} ({label})"))  # noqa: B023 - called at once
        la, lb = median(a), median(b)
        value = ratio(la, lb)
        rows.append(
            Row(
                f"watchdog: `lynx start -ni`, {label}, plain config vs Lynx {BEFORE} (no watchdog)",
                fmt_ms(la),
                fmt_ms(lb),
                f"{value:.2f}x ({fmt_diff_ms(la - lb)})",
                "<= 1.10x (noise)",
                value <= 1.10,
                samples={"lynx_s": a, "baseline_s": b},
            )
        )
    return rows


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "watchdog": figure_watchdog,
}
