#!/usr/bin/env python3
"""Lynx's performance figures, each against its baseline, interleaved in one run, as one table.

    python benchmarks/run.py              # every figure, 5 pairs each
    python benchmarks/run.py --quick      # a small version of each, about a minute
    python benchmarks/run.py --only cron-delay --pairs 9
    python benchmarks/run.py --soak       # also: the idle scheduler over 500 runs

How each figure is measured is in ``harness.py``; the figures are in ``figures_*.py``, one module
per subject. A figure that cannot be measured here (no SLURM, a command this Lynx lacks) gives a
"skipped" row with the reason.

Exit status: 0 when every figure was measured or skipped (whether or not its target holds), 1
when a figure could not be measured (Lynx failed, timed out or wrote nothing), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import figures_notify
import figures_operations
import figures_output
import figures_parallel
import figures_resume
import figures_schedule
import figures_slurm
import figures_startup
import figures_steps
import figures_watchdog
from harness import PYTHON, Bench, BenchError, Row, SkipFigure, end_all

ALL: dict[str, Callable[[Bench], list[Row]]] = {
    **figures_startup.FIGURES,
    **figures_output.FIGURES,
    **figures_schedule.FIGURES,
    **figures_operations.FIGURES,
    **figures_steps.FIGURES,
    **figures_watchdog.FIGURES,
    **figures_slurm.FIGURES,
    **figures_parallel.FIGURES,
    **figures_resume.FIGURES,
    **figures_notify.FIGURES,
}
# In the table's order; 'soak' (last) runs only with --soak.
FIGURES = {**{name: figure for name, figure in ALL.items() if name != "soak"}, "soak": ALL["soak"]}
HEADER = ("figure", "Lynx", "baseline", "ratio / diff", "target", "holds")


def render(rows: Sequence[Row]) -> str:
    """A Markdown table, aligned so it reads in a terminal too."""
    cells = [HEADER] + [
        (row.figure, row.lynx, row.baseline, row.compare, row.target, row.verdict)
        if row.error is None and row.skipped is None
        else (
            row.figure,
            "error (below)" if row.error is not None else "skipped (below)",
            "",
            "",
            row.target,
            row.verdict,
        )
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
                except SkipFigure as reason:
                    rows.append(Row(name, skipped=str(reason)))
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
    notes = [row for row in rows if row.note and row.error is None and row.skipped is None]
    if notes:
        print()
    for row in notes:
        print(f"- {row.figure.split(':')[0]}: {row.note}")
    for row in rows:
        if row.skipped is not None:
            print(f"\n{row.figure}: skipped: {row.skipped}")
    errors = [row for row in rows if row.error is not None]
    for row in errors:
        print(f"\nERROR in {row.figure}: {row.error}")
    failing = [row.figure.split(":")[0] for row in rows if row.verdict == "no"]
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
