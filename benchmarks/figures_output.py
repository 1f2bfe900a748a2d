"""Output figures: a step printing hundreds of MiB to a log file or a pipe, and a line's way to the log."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

from harness import (
    LIVE,
    MIB,
    PIPE,
    PYTHON,
    Bench,
    BenchError,
    Finished,
    Row,
    fmt_mib,
    fmt_ms,
    kill_tree,
    lynx_failed,
    median,
    ratio,
    reap,
    run_chain,
    spawn,
    steps_config,
    stop,
    write,
)

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


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "output-log": figure_output_log,
    "output-pipe": figure_output_pipe,
    "log-latency": figure_log_latency,
}
