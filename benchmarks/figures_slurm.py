"""SLURM figures (issues 9, 14), on the cluster this machine's ``srun`` talks to: what Lynx adds to a
trivial SLURM step over a bare ``srun``, what its up-front check costs, and how soon Lynx exits
after Ctrl+C cancels a running job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from harness import (
    PYTHON,
    REPO,
    TRIVIAL_STEP,
    Bench,
    BenchError,
    Finished,
    Row,
    SkipFigure,
    fmt_diff_ms,
    fmt_ms,
    lynx_failed,
    median,
    reap,
    spawn,
    stop,
    write,
)

SLEEP_STEP = "import time; time.sleep(120)\n"
# Times the check 'lynx start' and 'lynx validate' make of a config with SLURM steps (issue 14.13)
# inside a process of its own, against the check before it (scontrol ping alone). Prints one JSON object.
CHECK_PROBE = """\
import json, subprocess, sys, time
from lynx.config import load_pipeline
from lynx.launch import check_launchers
configs = {"one": load_pipeline("check1.yaml"), "four": load_pipeline("check4.yaml")}
found = {"ping": [], "one": [], "four": []}
for _ in range(int(sys.argv[1])):
    started = time.perf_counter()
    subprocess.run(["scontrol", "ping"], capture_output=True, check=True)
    found["ping"].append(time.perf_counter() - started)
    for name, pipeline in configs.items():
        started = time.perf_counter()
        check_launchers(pipeline)
        found[name].append(time.perf_counter() - started)
print(json.dumps(found))
"""


def _check_cluster(bench: Bench, cwd: Path) -> None:
    """Raise SkipFigure unless srun is here and the controller answers."""
    for command in ("srun", "squeue", "scancel", "scontrol"):
        if shutil.which(command, path=bench.env.get("PATH")) is None:
            raise SkipFigure(f"{command} is not on PATH (start a cluster with test/slurm/cluster.sh start)")
    try:
        ping = subprocess.run(["scontrol", "ping"], env=bench.env, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        raise SkipFigure("the SLURM controller does not answer (scontrol ping timed out)") from None
    if ping.returncode != 0 or "DOWN" in ping.stdout:
        raise SkipFigure(f"the SLURM controller does not answer: {' '.join(ping.stdout.split())}")


def _jobs(bench: Bench, name: str) -> list[tuple[str, str]]:
    """(job id, state) of the jobs called ``name`` that are pending or running (squeue's default)."""
    listing = subprocess.run(
        ["squeue", "-h", "-n", name, "-o", "%A|%T"], env=bench.env, capture_output=True, text=True
    ).stdout
    return [tuple(line.split("|", 1)) for line in listing.splitlines() if "|" in line]  # type: ignore[misc]


def _wait_running(bench: Bench, name: str, popen: subprocess.Popen[bytes], what: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = [job for job, state in _jobs(bench, name) if state == "RUNNING"]
        if running:
            return running[0]
        if popen.poll() is not None:
            raise BenchError(f"{what}: exited with {popen.returncode} before its job ran")
        time.sleep(0.02)
    raise BenchError(f"{what}: job {name} not running within 60 s")


def _srun(name: str, cwd: Path, *argv: str) -> list[str]:
    # The options Lynx gives srun itself (lynx/slurm.py), so both sides ask SLURM for the same.
    return ["srun", f"--job-name={name}", f"--chdir={cwd}", "--export=ALL", "--input=none", "--quiet", *argv]


def _overhead(bench: Bench, cwd: Path) -> Row:
    """A one-step run on SLURM vs a bare srun, beside a local one-step run vs the bare step."""
    write(cwd, "slurm.yaml", "steps:\n  - script: step.py\n    slurm: {}\n")
    write(cwd, "local.yaml", "steps:\n  - script: step.py\n")
    step = str(cwd / "step.py")
    runs: dict[str, list[Finished]] = {"slurm": [], "srun": [], "local": [], "python": []}
    commands = {
        "slurm": (bench.lynx_argv("start", "-ni", "-cf", "slurm.yaml"), "lynx start (SLURM step)"),
        "srun": (_srun("bench-bare", cwd, PYTHON, step), "bare srun"),
        "local": (bench.lynx_argv("start", "-ni", "-cf", "local.yaml"), "lynx start (local step)"),
        "python": ([PYTHON, step], "python step.py"),
    }
    for number in range(bench.pairs + 1):  # the first round warms up
        for side, (argv, what) in commands.items():
            finished = bench.run(argv, cwd, what)
            if number:
                runs[side].append(finished)
    wall = {side: median([f.wall for f in found]) for side, found in runs.items()}
    slurm, local = wall["slurm"] - wall["srun"], wall["local"] - wall["python"]
    return Row(
        "slurm: `lynx start -ni`, 1 trivial SLURM step vs bare `srun`",
        fmt_ms(wall["slurm"]),
        f"{fmt_ms(wall['srun'])} (srun)",
        fmt_diff_ms(slurm),
        "<= local fixed cost + 20 ms",
        slurm <= local + 0.020,
        samples={side: [f.wall for f in found] for side, found in runs.items()},
        note=f"the local fixed cost in the same rounds: `lynx start -ni` {fmt_ms(wall['local'])} vs "
        f"`python step.py` {fmt_ms(wall['python'])}, {fmt_diff_ms(local)}; so a SLURM step costs Lynx "
        f"{fmt_diff_ms(slurm - local)} more than a local one (the check: `scontrol ping` with `srun --test-only`; the "
        "job's record in .lynx/jobs/; squeue looks)",
    )


def _cancel(bench: Bench, cwd: Path) -> Row:
    """Ctrl+C (SIGINT to Lynx) while its SLURM job runs -> Lynx's exit, vs ``scancel`` -> a bare srun's exit."""
    write(cwd, "sleep.py", SLEEP_STEP)
    write(cwd, "cancel.yaml", "steps:\n  - script: sleep.py\n    name: sleeper\n    slurm: {}\n")
    lynx_job = "lynx:cancel:sleeper"

    def lynx() -> float:
        popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", "cancel.yaml")
        with errors:
            try:
                _wait_running(bench, lynx_job, popen, "lynx start (SLURM sleeper)")
                started = time.perf_counter()
                os.kill(popen.pid, signal.SIGINT)
                code, timed_out = reap(popen, 60)
                took = time.perf_counter() - started
            except BenchError:
                if popen.poll() is not None:
                    raise lynx_failed("lynx start (SLURM sleeper)", popen, errors) from None
                raise
            finally:
                stop(popen)
            if timed_out:
                raise lynx_failed("lynx start (SLURM sleeper): no exit within 60 s of Ctrl+C", popen, errors)
        left = _jobs(bench, lynx_job)
        if left:
            subprocess.run(["scancel", *(job for job, _ in left)], env=bench.env, capture_output=True)
            raise BenchError(f"Lynx exited ({code}) leaving its SLURM job {left[0][0]} {left[0][1]}")
        return took

    rounds = iter(range(1000))

    def baseline() -> float:
        name = f"bench-sleeper-{os.getpid()}-{next(rounds)}"  # never the job of an earlier round
        argv = _srun(name, cwd, PYTHON, str(cwd / "sleep.py"))
        popen = spawn(argv, cwd=cwd, env=bench.env, stderr=subprocess.DEVNULL)  # srun: "task 0: Terminated"
        try:
            job = _wait_running(bench, name, popen, "bare srun")
            started = time.perf_counter()
            subprocess.run(["scancel", job], env=bench.env, capture_output=True, timeout=30)
            reap(popen, 60)
            return time.perf_counter() - started
        finally:
            stop(popen)

    a, b = bench.interleave(lynx, baseline, warmup=False)
    la, lb = median(a), median(b)
    return Row(
        "slurm: Ctrl+C -> Lynx's exit (scancel, job ended) vs scancel -> bare srun's exit",
        fmt_ms(la),
        f"{fmt_ms(lb)} (srun)",
        fmt_diff_ms(la - lb),
        "<= 1 s",
        la <= 1.0,
        samples={"lynx_s": a, "baseline_s": b},
        note="Lynx's side includes its own scancel and its wait until squeue shows the job ended; no job was left",
    )


def _check(bench: Bench, cwd: Path) -> list[Row]:
    """The up-front check of a config with 1 and 4 distinct sets of SLURM options vs ``scontrol ping`` alone."""
    write(cwd, "check1.yaml", "steps:\n  - script: step.py\n    slurm: {}\n")
    options = ["{}", "{cpus-per-task: 2}", "{time: 5}", "{ntasks: 1}"]
    write(cwd, "check4.yaml", "steps:\n" + "".join(f"  - script: step.py\n    slurm: {each}\n" for each in options))
    write(cwd, "check_probe.py", CHECK_PROBE)
    env = {**bench.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), bench.env.get("PYTHONPATH")]))}
    result = subprocess.run(
        [PYTHON, "check_probe.py", str(3 if bench.quick else 5 * bench.pairs)],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        tail = " / ".join(result.stderr.strip().splitlines()[-3:])
        raise BenchError(f"SLURM check probe: exited with {result.returncode}: {tail}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    ping = median(found["ping"])
    rows = []
    for name, label in (("one", "1 set of options"), ("four", "4 sets of options")):
        took = median(found[name])
        rows.append(
            Row(
                f"slurm: the start-up check, {label} (srun --test-only each, with scontrol ping) vs the ping alone",
                fmt_ms(took),
                f"{fmt_ms(ping)} (scontrol ping)",
                fmt_diff_ms(took - ping),
                "<= ping + 20 ms",
                took - ping <= 0.020,
                samples=found,
            )
        )
    rows[0].note = (
        "what 'lynx start' and 'lynx validate' add for a config with SLURM steps, timed inside a process of its "
        "own; before issue 14.13, start asked only scontrol ping (and validate srun --test-only per step, one "
        "after the other)"
    )
    return rows


def figure_slurm(bench: Bench) -> list[Row]:
    """A trivial SLURM step vs a bare ``srun``; Ctrl+C -> exit (skipped without a working ``srun``)."""
    cwd = bench.folder("slurm")
    _check_cluster(bench, cwd)
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "probe.yaml", "steps:\n  - script: step.py\n    slurm: {}\n")
    try:
        bench.run(bench.lynx_argv("start", "-ni", "-cf", "probe.yaml"), cwd, "lynx start (SLURM step)")
    except BenchError as error:
        if "unknown key" in str(error):
            raise SkipFigure(f"this Lynx has no 'slurm:' step key: {error}") from None
        raise
    return [_overhead(bench, cwd), *_check(bench, cwd), _cancel(bench, cwd)]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "slurm": figure_slurm,
}
