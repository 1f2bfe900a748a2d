#!/usr/bin/env python3
"""Lynx's performance figures (issue 4), each against its baseline, interleaved in one run.

Every figure runs Lynx (A) and its baseline (B) in turns, A B A B ..., and reports medians.
Wall time and peak memory are measured from outside the measured processes: wall time from
just before the spawn to the reap; peak RSS by sampling ``/proc`` (VmHWM) and psutil every
10 ms, or as the ru_maxrss of the only child of a small launcher process (not of this harness:
a child's ru_maxrss includes the memory of the process that spawned it, before its exec).
Both sides use this interpreter and the same environment, minus PYTHONUNBUFFERED and
PYTHONDONTWRITEBYTECODE.

    python benchmarks/run.py              # every figure, 5 pairs each
    python benchmarks/run.py --quick      # a small version of each, well under a minute
    python benchmarks/run.py --only cron-delay --pairs 9
    python benchmarks/run.py --soak       # also: the idle scheduler over 500 runs

Exit status: 0 when every figure was measured (whether or not its target holds), 1 when a
figure could not be measured (Lynx failed, timed out or wrote nothing), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import psutil

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MIB = 1024 * 1024
DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
# Processes this run started and has not reaped yet: ended if the harness itself is interrupted.
LIVE: set[subprocess.Popen[bytes]] = set()

# The step scripts and the output generator. Each is written into the run's temp dir.
TRIVIAL_STEP = "import sys; sys.exit(0)\n"
STAMP_STEP = """\
import time; STARTED = time.time()
import sys
with open(sys.argv[1], "a", encoding="ascii") as handle:
    handle.write(f"{STARTED:.6f}\\n")
"""
# Writes through its own 64 KiB buffer, so it makes the same write calls whether or not
# PYTHONUNBUFFERED is set (Lynx sets it for its steps; the shell baselines do not).
GENERATOR = """\
import os, sys
total = int(sys.argv[1])
line = b"x" * 99 + b"\\n"
out = open(sys.stdout.fileno(), "wb", buffering=64 * 1024, closefd=False)
write = out.write
for _ in range(total // len(line)):
    write(line)
out.flush()
"""
LATENCY_STEP = """\
import sys, time
print(f"LATENCY-PROBE {time.time():.6f}", flush=True)
time.sleep(float(sys.argv[1]))
"""
LATENCY_PROBE = re.compile(rb"LATENCY-PROBE (\d+\.\d+)")


class BenchError(Exception):
    """A figure could not be measured: Lynx (or a baseline) failed, timed out or wrote nothing."""


@dataclass
class Row:
    """One line of the table."""

    figure: str
    lynx: str = ""
    baseline: str = ""
    compare: str = ""
    target: str = ""
    holds: bool | None = None
    error: str | None = None
    samples: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # how it was measured, printed under the table

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        return "yes" if self.holds else "no"


@dataclass
class Finished:
    """How one measured process (or pipeline of processes) ended."""

    wall: float  # seconds, from just before the first spawn to the last reap
    returncode: int  # of the first process of a pipeline
    peak: int = 0  # bytes: peak RSS sampled from outside, when asked for
    stderr: str = ""


# --- processes ---------------------------------------------------------------------------------


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdin: int | IO[bytes] = DEVNULL,
    stdout: int | IO[bytes] = DEVNULL,
    stderr: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (so its group can be ended without touching ours)."""
    popen = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True
    )
    LIVE.add(popen)
    return popen


def kill_tree(pid: int) -> None:
    """SIGKILL a process this run started and everything below it."""
    try:
        process = psutil.Process(pid)
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:
        return
    for each in tree:
        with contextlib.suppress(psutil.Error):
            each.kill()


def reap(popen: subprocess.Popen[bytes], timeout: float) -> tuple[int, bool]:
    """Wait for ``popen`` to exit (killing its tree after ``timeout``).

    Returns:
        (exit code, whether it timed out).
    """
    lock = threading.Lock()
    state = {"exited": False, "timed_out": False}

    def on_timeout() -> None:
        # Under the lock: the process is not reaped meanwhile, so its PID cannot be reused.
        with lock:
            if not state["exited"]:
                state["timed_out"] = True
                kill_tree(popen.pid)

    timer = threading.Timer(timeout, on_timeout)
    timer.daemon = True
    timer.start()
    try:
        if hasattr(os, "waitid"):
            os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
        with lock:
            state["exited"] = True
        _, status = os.waitpid(popen.pid, 0)
    finally:
        timer.cancel()
    popen.returncode = os.waitstatus_to_exitcode(status)
    LIVE.discard(popen)
    return popen.returncode, state["timed_out"]


def stop(popen: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """End a long-running process this run started: SIGTERM its group, SIGKILL its tree if it lingers."""
    if popen.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGTERM)
        code, _ = reap(popen, timeout)
        return code
    return popen.returncode


def end_all() -> None:
    for popen in list(LIVE):
        if popen.returncode is None and popen.poll() is None:
            kill_tree(popen.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(5)
        LIVE.discard(popen)


def read_peak(pid: int) -> int:
    """The process's peak RSS so far (VmHWM), else its current RSS; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


class PeakSampler:
    """Samples one process's peak RSS from outside every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.count = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            value = read_peak(self.pid)
            self.peak = max(self.peak, value)
            self.count += 1
            if self._done.wait(self.interval):
                return

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


# Runs one command (stdout to /dev/null) and prints its exit code and ru_maxrss. A child's
# ru_maxrss counts the memory of the process it was spawned from, so that must be small:
# this bare interpreter (about 8 MiB: the floor below which figures read as the floor).
RSS_LAUNCHER = """\
import os, sys
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ,
                      file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024))
"""


def peak_rss(argv: Sequence[str], *, cwd: Path, env: dict[str, str], what: str) -> int:
    """Peak RSS (bytes) of ``argv`` run to its end, as the only child of a small launcher."""
    result = subprocess.run(
        [PYTHON, "-S", "-I", "-c", RSS_LAUNCHER, *argv],
        cwd=cwd,
        env=env,
        stdin=DEVNULL,
        capture_output=True,
        timeout=120,
    )
    try:
        code, maxrss = (int(word) for word in result.stdout.split())
    except ValueError:
        raise BenchError(f"{what}: the RSS launcher failed: {result.stderr.decode(errors='replace')[-300:]}") from None
    if code != 0:
        raise BenchError(f"{what}: exited with {code}: {result.stderr.decode(errors='replace')[-300:]}")
    return maxrss


def error_tail(handle: IO[bytes]) -> str:
    handle.seek(0)
    lines = [line.strip() for line in handle.read()[-4000:].decode("utf-8", "replace").splitlines() if line.strip()]
    return " / ".join(lines[-3:])


def run_chain(
    commands: Sequence[Sequence[str]],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout: float,
    what: str,
    stdout: int = DEVNULL,
    sample: int | None = None,
) -> Finished:
    """Run ``commands`` as a pipeline (``a | b | ...``, last stdout to ``stdout``); fail unless all exit 0.

    Args:
        sample: index of the command whose peak RSS is sampled from outside.
    """
    with tempfile.TemporaryFile() as errors:
        popens: list[subprocess.Popen[bytes]] = []
        sampler = None
        started = time.perf_counter()
        try:
            upstream: int | IO[bytes] = DEVNULL
            for index, argv in enumerate(commands):
                last = index == len(commands) - 1
                popen = spawn(argv, cwd=cwd, env=env, stdin=upstream, stdout=stdout if last else PIPE, stderr=errors)
                if index > 0 and not isinstance(upstream, int):
                    upstream.close()  # only the reader holds the pipe now, so it sees the end
                if popen.stdout is not None:
                    upstream = popen.stdout
                popens.append(popen)
                if index == sample:
                    sampler = PeakSampler(popen.pid)
            results = [reap(popen, timeout) for popen in popens]
            wall = time.perf_counter() - started
        finally:
            peak = sampler.stop() if sampler is not None else 0
            for popen in popens:
                if popen.returncode is None:
                    kill_tree(popen.pid)
                    reap(popen, 10)
        message = error_tail(errors)
    for (code, timed_out), argv in zip(results, commands):
        if timed_out:
            raise BenchError(f"{what}: timed out after {timeout:.0f} s")
        if code != 0:
            name = os.path.basename(argv[0]) if argv[0] != PYTHON else "python"
            raise BenchError(f"{what}: {name} exited with {code}" + (f": {message}" if message else ""))
    return Finished(wall=wall, returncode=results[0][0], peak=peak, stderr=message)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def fmt_ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"


def fmt_mib(size: float) -> str:
    return f"{size / MIB:.1f} MiB"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def wait_for_stamps(
    path: Path, count: int, popen: subprocess.Popen[bytes], timeout: float, what: str, interval: float = 0.02
) -> list[float]:
    """Poll ``path`` (one time.time() per line, written by the stamp step) until it has ``count`` lines."""
    deadline = time.monotonic() + timeout
    while True:
        stamps = read_stamps(path)
        if len(stamps) >= count:
            return stamps
        if popen.poll() is not None:
            LIVE.discard(popen)
            raise BenchError(f"{what}: Lynx exited with {popen.returncode} after {len(stamps)} of {count} runs")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: {len(stamps)} of {count} runs within {timeout:.0f} s")
        time.sleep(interval)


def read_stamps(path: Path) -> list[float]:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    # The last line may be half written.
    return [float(line) for line in text.split("\n")[:-1] if line]


def time_to_first_statement(cwd: Path, env: dict[str, str], stamps: str) -> float:
    """The floor for a step's start: spawn the stamp step from here, as Lynx would; seconds to its first line."""
    path = cwd / stamps
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    spawned = time.time()
    step = spawn([PYTHON, "stamp.py", stamps], cwd=cwd, env=env, stdout=PIPE)
    assert step.stdout is not None
    step.stdout.close()
    code, _ = reap(step, 30)
    found = read_stamps(path)
    if code != 0 or not found:
        raise BenchError(f"the floor step (python stamp.py) exited with {code}")
    return found[0] - spawned


def cpu_seconds(pid: int) -> float:
    """CPU time of the process (all threads): per-thread schedstat (ns) when /proc has it, else psutil (ticks)."""
    total = 0
    tasks = glob.glob(f"/proc/{pid}/task/*/schedstat")
    for path in tasks:
        try:
            with open(path, "rb") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            tasks = []
            break
    if tasks:
        return total / 1e9
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


# --- the benchmark -----------------------------------------------------------------------------


class Bench:
    """Settings and shared helpers for the figures of one run."""

    def __init__(self, *, quick: bool, pairs: int, soak_runs: int, lynx: list[str], root: Path) -> None:
        self.quick = quick
        self.pairs = pairs
        self.soak_runs = soak_runs
        self.lynx = lynx
        self.root = root
        self.timeout = 120.0 if quick else 900.0
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")}
        if lynx[1:3] == ["-m", "lynx"]:
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")]))
        # What Lynx gives its steps: the floor measurements spawn with the same environment.
        self.step_env = {**self.env, "PYTHONUNBUFFERED": "1"}

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def lynx_argv(self, *args: str) -> list[str]:
        return [*self.lynx, *args]

    def run(self, argv: Sequence[str], cwd: Path, what: str, sample: bool = False) -> Finished:
        return run_chain([argv], cwd=cwd, env=self.env, timeout=self.timeout, what=what, sample=0 if sample else None)

    def interleave(
        self, lynx: Callable[[], Any], baseline: Callable[[], Any], warmup: bool = True
    ) -> tuple[list[Any], list[Any]]:
        """A B A B ...: ``pairs`` of each, after one unrecorded warm-up pair."""
        if warmup:
            lynx()
            baseline()
        a: list[Any] = []
        b: list[Any] = []
        for _ in range(self.pairs):
            a.append(lynx())
            b.append(baseline())
        return a, b

    def start_lynx(self, cwd: Path, *args: str) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it (``with errors:``)
        return spawn(self.lynx_argv(*args), cwd=cwd, env=self.env, stderr=errors), errors


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def steps_config(scripts: Sequence[tuple[str, Sequence[str]]], cron: str | None = None) -> str:
    lines = []
    if cron is not None:
        lines += ["cron:", f"  second: {cron!r}"]
    lines.append("steps:")
    for script, arguments in scripts:
        lines.append(f"  - script: {script}")
        if arguments:
            lines.append("    arguments: [" + ", ".join(json.dumps(a) for a in arguments) + "]")
    return "\n".join(lines) + "\n"


def lynx_failed(what: str, popen: subprocess.Popen[bytes], errors: IO[bytes]) -> BenchError:
    message = error_tail(errors)
    return BenchError(f"{what}: Lynx exited with {popen.returncode}" + (f": {message}" if message else ""))


# --- the figures -------------------------------------------------------------------------------


def figure_help(bench: Bench) -> list[Row]:
    """``lynx --help`` vs ``python -c "import click"``: wall time, and peak RSS (separate runs)."""
    cwd = bench.folder("help")
    lynx, click = bench.lynx_argv("--help"), [PYTHON, "-c", "import click"]
    a, b = bench.interleave(
        lambda: bench.run(lynx, cwd, "lynx --help"),
        lambda: bench.run(click, cwd, "python -c 'import click'"),
    )
    # Memory in runs of their own: the launcher that reads ru_maxrss would add to the wall times.
    rss_a, rss_b = bench.interleave(
        lambda: peak_rss(lynx, cwd=cwd, env=bench.env, what="lynx --help"),
        lambda: peak_rss(click, cwd=cwd, env=bench.env, what="python -c 'import click'"),
        warmup=False,
    )
    la, lb = median([f.wall for f in a]), median([f.wall for f in b])
    ra, rb = median(rss_a), median(rss_b)
    value = ratio(la, lb)
    return [
        Row(
            "help: `lynx --help` vs `python -c 'import click'`",
            f"{fmt_ms(la)}, {fmt_mib(ra)}",
            f"{fmt_ms(lb)}, {fmt_mib(rb)}",
            f"{value:.2f}x",
            "<= 1.30x",
            value <= 1.30,
            samples={
                "lynx_s": [f.wall for f in a],
                "baseline_s": [f.wall for f in b],
                "lynx_peak_rss": rss_a,
                "baseline_peak_rss": rss_b,
            },
            note="peak RSS from separate runs, as the only child of a small launcher (reads 8-9 MiB at the least)",
        )
    ]


def figure_fixed_cost(bench: Bench) -> list[Row]:
    """``lynx start -ni`` on a one-step config vs running that step directly."""
    cwd = bench.folder("fixed-cost")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "one-step.yaml", steps_config([("step.py", [])]))
    a, b = bench.interleave(
        lambda: bench.run(bench.lynx_argv("start", "-ni", "-cf", "one-step.yaml"), cwd, "lynx start (1 step)"),
        lambda: bench.run([PYTHON, "step.py"], cwd, "python step.py"),
    )
    la, lb = median([f.wall for f in a]), median([f.wall for f in b])
    difference = la - lb
    return [
        Row(
            "fixed-cost: `lynx start -ni`, 1 step vs `python step.py`",
            fmt_ms(la),
            fmt_ms(lb),
            f"+{fmt_ms(difference)}" if difference >= 0 else f"-{fmt_ms(-difference)}",
            "<= +70 ms",
            difference <= 0.070,
            samples={"lynx_s": [f.wall for f in a], "baseline_s": [f.wall for f in b]},
        )
    ]


def _figure_steps(bench: Bench, name: str, count: int, limit: float) -> list[Row]:
    cwd = bench.folder(name)
    scripts = [f"step_{number:03d}.py" for number in range(1, count + 1)]
    for script in scripts:
        write(cwd, script, TRIVIAL_STEP)
    write(cwd, "steps.yaml", steps_config([(script, []) for script in scripts]))
    loop = f'for f in {" ".join(scripts)}; do {shlex.quote(PYTHON)} "$f" || exit 1; done'
    a, b = bench.interleave(
        lambda: bench.run(bench.lynx_argv("start", "-ni", "-cf", "steps.yaml"), cwd, f"lynx start ({count} steps)"),
        lambda: bench.run(["sh", "-c", loop], cwd, "shell loop"),
    )
    la, lb = median([f.wall for f in a]), median([f.wall for f in b])
    value = ratio(la, lb)
    return [
        Row(
            f"{name}: {count} trivial steps vs a shell loop",
            fmt_ms(la),
            fmt_ms(lb),
            f"{value:.2f}x",
            f"<= {limit:.2f}x",
            value <= limit,
            samples={"lynx_s": [f.wall for f in a], "baseline_s": [f.wall for f in b]},
        )
    ]


def figure_steps20(bench: Bench) -> list[Row]:
    """20 trivial steps (quick: 10) vs a shell loop running the same scripts."""
    return _figure_steps(bench, "steps20", 10 if bench.quick else 20, 1.20)


def figure_steps100(bench: Bench) -> list[Row]:
    """100 trivial steps (quick: 25) vs a shell loop running the same scripts."""
    return _figure_steps(bench, "steps100", 25 if bench.quick else 100, 1.05)


def _output_sizes(bench: Bench) -> tuple[int, int]:
    large = (20 if bench.quick else 200) * MIB
    return large, large // 4


def figure_output_log(bench: Bench) -> list[Row]:
    """A step printing 200 MiB (quick: 20) in 100-byte lines, ``--log-file``, Lynx's stdout to /dev/null."""
    cwd = bench.folder("output-log")
    write(cwd, "gen.py", GENERATOR)
    large, small = _output_sizes(bench)
    write(cwd, "large.yaml", steps_config([("gen.py", [str(large)])]))
    write(cwd, "small.yaml", steps_config([("gen.py", [str(small)])]))

    def lynx(config: str) -> Finished:
        for old in cwd.glob("lynx.log*"):
            old.unlink()
        finished = bench.run(
            bench.lynx_argv("start", "-ni", "-cf", config, "-lf", "lynx.log"), cwd, "lynx start -lf", sample=True
        )
        log = cwd / "lynx.log"
        if not log.exists() or b"completed successfully" not in log.read_bytes()[-4096:]:
            raise BenchError("lynx start -lf: the log file does not end with the step's completion")
        return finished

    def baseline() -> Finished:
        return run_chain(
            [[PYTHON, "gen.py", str(large)], ["tee", "tee.out"]],
            cwd=cwd,
            env=bench.env,
            timeout=bench.timeout,
            what="python gen.py | tee",
            sample=1,
        )

    runs_small: list[Finished] = []

    def lynx_both() -> Finished:
        finished = lynx("large.yaml")
        runs_small.append(lynx("small.yaml"))
        return finished

    a, b = bench.interleave(lynx_both, baseline, warmup=False)
    for leftover in cwd.glob("*.out"):
        leftover.unlink()
    peak_large, peak_small = median([f.peak for f in a]), median([f.peak for f in runs_small])
    growth = peak_large - peak_small
    flat = growth <= max(2 * MIB, 0.05 * peak_small)
    la, lb = median([f.wall for f in a]), median([f.wall for f in b])
    value = ratio(la, lb)
    return [
        Row(
            "output-log: peak RSS of Lynx, 100-byte lines to -lf",
            f"{fmt_mib(peak_large)} ({large // MIB} MiB out)",
            f"{fmt_mib(peak_small)} ({small // MIB} MiB out)",
            f"+{fmt_mib(growth)}" if growth >= 0 else f"-{fmt_mib(-growth)}",
            "<= 40 MiB, flat (<= +2 MiB)",
            max(peak_large, peak_small) <= 40 * MIB and flat,
            samples={"peak_large": [f.peak for f in a], "peak_small": [f.peak for f in runs_small]},
        ),
        Row(
            f"output-log: wall time, {large // MIB} MiB vs `python gen.py | tee file`",
            fmt_ms(la),
            fmt_ms(lb),
            f"{value:.2f}x",
            "<= 2.00x",
            value <= 2.0,
            samples={"lynx_s": [f.wall for f in a], "baseline_s": [f.wall for f in b]},
        ),
    ]


def figure_output_pipe(bench: Bench) -> list[Row]:
    """The same generator without a log file, Lynx's stdout piped to ``cat > /dev/null``."""
    cwd = bench.folder("output-pipe")
    write(cwd, "gen.py", GENERATOR)
    large, _ = _output_sizes(bench)
    write(cwd, "large.yaml", steps_config([("gen.py", [str(large)])]))

    def chain(first: list[str], what: str) -> Callable[[], Finished]:
        return lambda: run_chain([first, ["cat"]], cwd=cwd, env=bench.env, timeout=bench.timeout, what=what)

    a, b = bench.interleave(
        chain(bench.lynx_argv("start", "-ni", "-cf", "large.yaml"), "lynx start | cat"),
        chain([PYTHON, "gen.py", str(large)], "python gen.py | cat"),
        warmup=False,
    )
    la, lb = median([f.wall for f in a]), median([f.wall for f in b])
    value = ratio(la, lb)
    return [
        Row(
            f"output-pipe: {large // MIB} MiB, `lynx start | cat` vs `python gen.py | cat`",
            fmt_ms(la),
            fmt_ms(lb),
            f"{value:.2f}x",
            "<= 1.30x",
            value <= 1.30,
            samples={"lynx_s": [f.wall for f in a], "baseline_s": [f.wall for f in b]},
        )
    ]


def _poll_for_probe(path: Path, popen: subprocess.Popen[bytes], timeout: float, what: str) -> float:
    """Poll ``path`` every ~1 ms until the probe line is in it; return (seen - printed) in seconds."""
    deadline = time.monotonic() + timeout
    offset = 0
    pending = b""
    while True:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        if size > offset:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
            seen = time.time()
            offset += len(data)
            pending += data
            found = LATENCY_PROBE.search(pending)
            if found:
                return seen - float(found.group(1))
            pending = pending[-200:]
        if popen.poll() is not None:
            LIVE.discard(popen)
            raise BenchError(f"{what}: exited with {popen.returncode} before the line reached {path.name}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: the line did not reach {path.name} within {timeout:.0f} s")
        time.sleep(0.001)


def figure_log_latency(bench: Bench) -> list[Row]:
    """A step prints (and flushes) a line, then sleeps 2 s: how late the line reaches the log file."""
    cwd = bench.folder("log-latency")
    write(cwd, "probe.py", LATENCY_STEP)
    sleep = "2"
    write(cwd, "probe.yaml", steps_config([("probe.py", [sleep])]))

    def lynx() -> float:
        log = cwd / "lynx.log"
        for old in cwd.glob("lynx.log*"):
            old.unlink()
        popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", "probe.yaml", "-lf", "lynx.log")
        with errors:
            try:
                latency = _poll_for_probe(log, popen, 30, "lynx start -lf")
            except BenchError:
                exited = popen.returncode is not None
                stop(popen)
                if exited:
                    raise lynx_failed("lynx start -lf", popen, errors) from None
                raise
            code, timed_out = reap(popen, 30)  # the step sleeps on: Lynx ends when it does
            if code != 0 or timed_out:
                raise lynx_failed("lynx start -lf", popen, errors)
        return latency

    def baseline() -> float:
        out = cwd / "tee.log"
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        step = spawn([PYTHON, "probe.py", sleep], cwd=cwd, env=bench.env, stdout=PIPE)
        assert step.stdout is not None
        tee = spawn(["tee", str(out)], cwd=cwd, env=bench.env, stdin=step.stdout)
        step.stdout.close()
        try:
            return _poll_for_probe(out, tee, 30, "python probe.py | tee")
        finally:
            for popen in (step, tee):  # the floor is known once the line is seen: no need to sleep on
                kill_tree(popen.pid)
                reap(popen, 10)

    a, b = bench.interleave(lynx, baseline, warmup=False)
    la, lb = median(a), median(b)
    return [
        Row(
            "log-latency: flushed line -> log file (step sleeps 2 s)",
            fmt_ms(la),
            f"{fmt_ms(lb)} (| tee)",
            f"+{fmt_ms(la - lb)}" if la >= lb else f"-{fmt_ms(lb - la)}",
            "<= 50 ms",
            la <= 0.050,
            samples={"lynx_s": a, "baseline_s": b},
        )
    ]


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


def figure_load5000(bench: Bench) -> list[Row]:
    """A 5,000-step config, a merge key on every step: launch -> first step, vs a CSafeLoader parse."""
    cwd = bench.folder("load5000")
    write(cwd, "stamp.py", STAMP_STEP)
    count = 5000
    text = (
        "configs:\n"
        "  - step: &step\n"
        "      - script: stamp.py\n"
        "        arguments:\n"
        '          - "stamps.txt"\n'
        "steps:\n" + "  - <<: *step\n" * count
    )
    write(cwd, "big.yaml", text)
    stamps = cwd / "stamps.txt"
    parse = "import sys, yaml; yaml.load(open(sys.argv[1], 'rb').read(), Loader=yaml.CSafeLoader)"

    def lynx() -> float:
        with contextlib.suppress(FileNotFoundError):
            stamps.unlink()
        launched = time.time()
        popen, errors = bench.start_lynx(cwd, "start", "-ni", "-cf", "big.yaml")
        with errors:
            try:
                first = wait_for_stamps(stamps, 1, popen, 60, "load5000", interval=0.001)[0]
            except BenchError:
                if popen.poll() is not None:
                    raise lynx_failed(f"lynx start ({count} steps)", popen, errors) from None
                raise
            finally:
                stop(popen)
        return first - launched

    step_start: list[float] = []

    def baseline() -> float:
        wall = bench.run([PYTHON, "-c", parse, "big.yaml"], cwd, "CSafeLoader parse").wall
        step_start.append(time_to_first_statement(cwd, bench.step_env, "floor-stamps.txt"))
        return wall

    a, b = bench.interleave(lynx, baseline)
    la, lb = median(a), median(b)
    value = ratio(la, lb)
    return [
        Row(
            f"load5000: launch -> first step, {count} merge-key steps",
            fmt_ms(la),
            f"{fmt_ms(lb)} (python -c CSafeLoader)",
            f"{value:.2f}x",
            "<= 1 s and <= 2.00x",
            la <= 1.0 and value <= 2.0,
            samples={"lynx_s": a, "baseline_s": b, "step_start_s": step_start},
            note="both sides include interpreter start-up; Lynx's also includes the first step's own start-up "
            f"(spawn -> first statement, measured alone: {fmt_ms(median(step_start))})",
        )
    ]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "help": figure_help,
    "fixed-cost": figure_fixed_cost,
    "steps20": figure_steps20,
    "steps100": figure_steps100,
    "output-log": figure_output_log,
    "output-pipe": figure_output_pipe,
    "log-latency": figure_log_latency,
    "cron-delay": figure_cron_delay,
    "idle": figure_idle,
    "load5000": figure_load5000,
    "soak": figure_soak,
}


# --- the table ---------------------------------------------------------------------------------

HEADER = ("figure", "Lynx", "baseline", "ratio / diff", "target", "holds")


def render(rows: Sequence[Row]) -> str:
    """A Markdown table, aligned so it reads in a terminal too."""
    cells = [HEADER] + [
        (row.figure, row.lynx, row.baseline, row.compare, row.target, row.verdict)
        if row.error is None
        else (row.figure, "error (below)", "", "", row.target, row.verdict)
        for row in rows
    ]
    # A "|" inside a cell would end it: Markdown wants it escaped.
    cells = [tuple(value.replace("|", "\\|") for value in values) for values in cells]
    widths = [max(len(line[column]) for line in cells) for column in range(len(HEADER))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(value.ljust(width) for value, width in zip(values, widths)) + " |"

    lines = [line(cells[0]), "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    lines += [line(values) for values in cells[1:]]
    return "\n".join(lines)


def lynx_command(override: str | None) -> list[str]:
    """``--lynx``, else the console script next to this interpreter, else ``python -m lynx``."""
    if override:
        return shlex.split(override)
    script = Path(PYTHON).with_name("lynx")
    if script.exists():
        return [str(script)]
    return [PYTHON, "-m", "lynx"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run Lynx's performance figures against their baselines (issue 4) and print one table.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="figures:\n"
        + "\n".join(f"  {name:<12} {(function.__doc__ or '').splitlines()[0]}" for name, function in FIGURES.items()),
    )
    parser.add_argument("--quick", action="store_true", help="a small version of each figure (well under a minute)")
    parser.add_argument("--only", choices=list(FIGURES), metavar="NAME", help="run one figure (names below)")
    parser.add_argument("--pairs", type=int, default=None, help="Lynx/baseline pairs per figure (default 5; quick 3)")
    parser.add_argument("--soak", action="store_true", help="also run 'soak': the idle scheduler over 500 runs")
    parser.add_argument("--soak-runs", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="also write the rows (with raw samples) to FILE")
    parser.add_argument("--lynx", metavar="CMD", help="the command that runs Lynx (default: the console script)")
    args = parser.parse_args(argv)
    if args.pairs is not None and args.pairs < 1:
        parser.error("--pairs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pairs = args.pairs or (3 if args.quick else 5)
    names = [args.only] if args.only else [name for name in FIGURES if name != "soak" or args.soak]
    soak_runs = args.soak_runs or (30 if args.quick else 500)
    lynx = lynx_command(args.lynx)
    rows: list[Row] = []
    began = time.monotonic()
    load_before = " ".join(f"{value:.2f}" for value in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="lynx-bench-") as root:
        bench = Bench(quick=args.quick, pairs=pairs, soak_runs=soak_runs, lynx=lynx, root=Path(root))
        try:
            for name in names:
                started = time.monotonic()
                print(f"[{name}] ...", file=sys.stderr, flush=True)
                try:
                    rows += FIGURES[name](bench)
                except BenchError as error:
                    rows.append(Row(name, error=str(error)))
                except Exception as error:  # a harness bug: say so, keep going with the other figures
                    traceback.print_exc()
                    rows.append(Row(name, error=f"{type(error).__name__}: {error}"))
                finally:
                    end_all()
                print(f"[{name}] {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            end_all()
            print("interrupted", file=sys.stderr)
            return 130
    mode = "quick" if args.quick else "full"
    print(
        f"Lynx benchmarks ({mode}; {pairs} interleaved pairs per figure, medians; "
        f"Python {platform.python_version()}; {os.cpu_count()} CPUs; {platform.system()} {platform.release()}; "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; {time.monotonic() - began:.0f} s)"
    )
    print(f"Lynx command: {' '.join(shlex.quote(part) for part in lynx)}; load average {load_before} before, ", end="")
    print(f"{' '.join(f'{value:.2f}' for value in os.getloadavg())} after")
    print()
    print(render(rows))
    notes = [row for row in rows if row.note and row.error is None]
    if notes:
        print()
    for row in notes:
        print(f"- {row.figure.split(':')[0]}: {row.note}")
    errors = [row for row in rows if row.error is not None]
    for row in errors:
        print(f"\nERROR in {row.figure}: {row.error}")
    failing = [row.figure.split(":")[0] for row in rows if row.error is None and not row.holds]
    if failing:
        print(f"\nTargets not held: {', '.join(dict.fromkeys(failing))}")
    if args.json:
        document = {
            "mode": mode,
            "pairs": pairs,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "lynx": lynx,
            "rows": [asdict(row) for row in rows],
        }
        Path(args.json).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
