"""The benchmark harness: processes measured from outside, interleaved A/B pairs, medians.

Every figure runs Lynx (A) and its baseline (B) in turns, A B A B ..., and reports medians.
Wall time and peak memory are measured from outside the measured processes: wall time from
just before the spawn to the reap; peak RSS by sampling ``/proc`` (VmHWM) and psutil every
10 ms, or as the ru_maxrss of the only child of a small launcher process (not of this harness:
a child's ru_maxrss includes the memory of the process that spawned it, before its exec).
Both sides use this interpreter and the same environment, minus PYTHONUNBUFFERED and
PYTHONDONTWRITEBYTECODE.

The figures live in the ``figures_*.py`` modules beside this one; ``run.py`` is the command line.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
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

# Step scripts shared by several figures, each written into the figure's folder.
TRIVIAL_STEP = "import sys; sys.exit(0)\n"
STAMP_STEP = """\
import time; STARTED = time.time()
import sys
with open(sys.argv[1], "a", encoding="ascii") as handle:
    handle.write(f"{STARTED:.6f}\\n")
"""


class BenchError(Exception):
    """A figure could not be measured: Lynx (or a baseline) failed, timed out or wrote nothing."""


class SkipFigure(Exception):  # noqa: N818 - not an error: a reason not to measure
    """A figure cannot be measured on this machine or with this Lynx (no srun, a command not there yet)."""


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

    skipped: str | None = None  # why the figure was not measured

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        if self.skipped is not None:
            return "skipped"
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


def fmt_diff_ms(difference: float) -> str:
    return f"+{fmt_ms(difference)}" if difference >= 0 else f"-{fmt_ms(-difference)}"


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


def _schedstat(pid: int, field: int) -> int | None:
    """A field of /proc/PID/task/*/schedstat summed over the process's threads; None without it."""
    total = 0
    tasks = glob.glob(f"/proc/{pid}/task/*/schedstat")
    for path in tasks:
        try:
            with open(path, "rb") as handle:
                total += int(handle.read().split()[field])
        except (OSError, ValueError, IndexError):
            return None
    return total if tasks else None


def cpu_seconds(pid: int) -> float:
    """CPU time of the process (all threads): per-thread schedstat (ns) when /proc has it, else psutil (ticks)."""
    nanoseconds = _schedstat(pid, 0)
    if nanoseconds is not None:
        return nanoseconds / 1e9
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def wakeups(pid: int) -> int | None:
    """How many times the process's threads have been put on a CPU (schedstat's third field); None without it."""
    return _schedstat(pid, 2)


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

    def require_command(self, *command: str) -> None:
        """Raise SkipFigure unless ``lynx COMMAND --help`` works (a command this Lynx may not have yet)."""
        argv = self.lynx_argv(*command, "--help")
        result = subprocess.run(argv, cwd=self.root, env=self.env, stdin=DEVNULL, capture_output=True, timeout=60)
        if result.returncode != 0:
            raise SkipFigure(f"this Lynx has no `lynx {' '.join(command)}` (--help exited with {result.returncode})")


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
