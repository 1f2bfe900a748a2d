"""The benchmark harness (benchmarks/run.py) works: it measures every figure and prints the table.

No timing is asserted here: whether the targets hold is the benchmark's output, not a test.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import psutil
from conftest import REPO, clean_env

RUN = REPO / "benchmarks" / "run.py"
FIGURES = (
    "help",
    "fixed-cost",
    "steps20",
    "steps100",
    "output-log",
    "output-pipe",
    "log-latency",
    "cron-delay",
    "idle",
    "load5000",
    "history",
    "imports",
    "before",
    "commands",
    "step-keys",
    "watchdog",
    "slurm",
    "parallel",
    "plan",
    "parallel-cpu",
    "overrides",
    "retry",
    "notify-imports",
    "notify-webhook",
)
# Figures that may be skipped on a machine without them (SLURM; the repository's git history).
MAY_SKIP = {"slurm", "imports", "before", "watchdog"}
HEADER = ["figure", "Lynx", "baseline", "ratio / diff", "target", "holds"]


def run_benchmark(*args: str, cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the harness with its temp dir (configs, scripts, logs) under ``cwd``; ``env`` on top of a clean one."""
    (cwd / "tmp").mkdir()
    return subprocess.run(
        [sys.executable, str(RUN), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        env=clean_env(TMPDIR=str(cwd / "tmp"), **env),
        timeout=timeout,
    )


def left_running(directory: Path) -> list[str]:
    """Processes whose working directory is under ``directory``."""
    found = []
    for process in psutil.process_iter(["cwd", "cmdline"]):
        cwd = process.info["cwd"]
        if cwd and cwd.startswith(str(directory)):
            found.append(" ".join(process.info["cmdline"] or []))
    return found


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of every line of the Markdown table (the header first, the separator left out)."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("| "):
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
            rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    return rows


def test_quick_run_prints_a_row_for_every_figure(tmp_path: Path) -> None:
    result = run_benchmark(
        "--quick", "--pairs", "1", "--json", str(tmp_path / "result.json"), cwd=tmp_path, timeout=240
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert rows[0] == HEADER
    body = rows[1:]
    assert all(len(row) == len(HEADER) for row in body), body
    figures = [row[0].split(":")[0] for row in body]
    assert set(figures) == set(FIGURES), figures
    measured = [row for row in body if row[5] != "skipped"]
    assert all(row[0] in MAY_SKIP for row in body if row not in measured), body
    assert all(row[5] in ("yes", "no") for row in measured), body
    assert all(row[1] and row[2] and row[3] and row[4] for row in measured), body
    document = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    assert [row["figure"] for row in document["rows"]] == [row[0] for row in body]
    assert all(row["error"] is None for row in document["rows"])
    # The harness cleaned up after itself: no Lynx or step is left running in its temp dir.
    assert left_running(tmp_path) == []


def test_a_failing_lynx_gives_an_error_row_and_exit_1(tmp_path: Path) -> None:
    failing = shlex.join([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])

    result = run_benchmark("--only", "help", "--pairs", "1", "--lynx", failing, cwd=tmp_path, timeout=60)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert rows[0] == HEADER
    assert len(rows) == 2
    assert rows[1][0] == "help"
    assert rows[1][5] == "ERROR"
    assert "exited with 3: boom" in result.stdout


def test_a_figure_that_cannot_run_here_is_skipped_with_its_reason(tmp_path: Path) -> None:
    # No SLURM client commands on this PATH: the SLURM figure says so instead of failing.
    empty = tmp_path / "bin"
    empty.mkdir()

    result = run_benchmark("--only", "slurm", "--pairs", "1", cwd=tmp_path, timeout=60, PATH=str(empty))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert rows[1][0] == "slurm"
    assert rows[1][5] == "skipped"
    assert "slurm: skipped: srun is not on PATH" in result.stdout
