"""Start-up figures: `lynx --help`, a one-step run, many trivial steps, a 5,000-step config."""

from __future__ import annotations

import contextlib
import shlex
import time
from typing import Callable

from harness import (
    PYTHON,
    STAMP_STEP,
    TRIVIAL_STEP,
    Bench,
    BenchError,
    Row,
    fmt_mib,
    fmt_ms,
    lynx_failed,
    median,
    peak_rss,
    ratio,
    steps_config,
    stop,
    time_to_first_statement,
    wait_for_stamps,
    write,
)


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
    "load5000": figure_load5000,
}
