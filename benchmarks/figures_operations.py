"""Operations figures (issue 8): the run history's cost per run, a one-shot run's imports, and
`lynx status` / `history` / `logs` against `lynx --help` with 100,000 runs in the history."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Callable

from harness import (
    PYTHON,
    REPO,
    TRIVIAL_STEP,
    Bench,
    BenchError,
    Row,
    SkipFigure,
    fmt_diff_ms,
    fmt_mib,
    fmt_ms,
    kill_tree,
    median,
    ratio,
    run_chain,
    steps_config,
    write,
)

# The baselines of a plain config's one-shot run: the last commit before issues 7-10 (the core Lynx),
# and the last before issues 13-18 (config room, hardening, recovery, resume, notifications, parallel
# steps), none of which may cost a config that does not use them anything.
BASELINES = {"issues 7-10": "32f2902", "issues 13-18": "a1847a0"}
HISTORY_LINES = 100_000

# Runs in a process of its own: one real run records the reporter calls, which are then replayed
# into the real reporters and timed. Prints one JSON object.
PROBE = """\
import json, os, sys, time
from datetime import datetime, timedelta
from pathlib import Path

directory, config, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
from lynx.config import load_pipeline
from lynx.relay import OutputRelay
from lynx.process import StepGuard
from lynx.outcome import combine_reporters
from lynx.runner import run_pipeline, stop_on_failure

class Recorder:
    def __init__(self):
        self.calls = []
    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))

recorded = Recorder()
run_pipeline(load_pipeline(config), on_failure=stop_on_failure, relay=OutputRelay(None), guard=StepGuard(),
             reporter=recorded)

def replay(reporter):
    started = time.perf_counter()
    for name, args in recorded.calls:
        getattr(reporter, name)(*args)
    return time.perf_counter() - started

# A foreground run: the history module, its recorder (the config's SHA-256) and one line, cold.
preimported = "lynx.history" in sys.modules
started = time.perf_counter()
from lynx.history import history_path, recorder_for
history = recorder_for(directory, config, None)
cold = time.perf_counter() - started + replay(history)

# A background scheduler: the line and its status entry (run, step, end, next fire), warm.
from lynx.state import EntryReporter, SchedulerEntry, write_entry
entry = SchedulerEntry(name="bench", pid=os.getpid(), cmdline=tuple(sys.argv), config_file=config,
                       started_at=datetime.now().astimezone().isoformat(), schedule="* * * * *")
write_entry(entry, Path(directory))
status = EntryReporter(entry, Path(directory), warn=print, next_fire=lambda now: now + timedelta(minutes=1))
both = combine_reporters(recorder_for(directory, config, "bench"), status)
warm = []
for _ in range(runs):
    started = time.perf_counter()
    spent = replay(both)
    fire = time.perf_counter()
    status.next_run(datetime.now().astimezone() + timedelta(minutes=1))
    warm.append(spent + time.perf_counter() - fire)

# The floor: one O_APPEND write of a line as long, the file opened and closed each time.
path = history_path(directory) + ".floor"
line = history.line(recorded.calls[-1][1][0])
floor = []
for _ in range(runs):
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line)
    os.close(fd)
    floor.append(time.perf_counter() - started)
print(json.dumps({"cold": cold, "warm": warm, "floor": floor, "preimported": preimported, "line": len(line)}))
"""
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)\s*$")


def _probe_env(bench: Bench, source: Path = REPO) -> dict[str, str]:
    return {**bench.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), bench.env.get("PYTHONPATH")]))}


def _run_probe(bench: Bench, cwd: Path, runs: int) -> dict[str, object]:
    result = subprocess.run(
        [PYTHON, "probe.py", str(cwd), "one-step.yaml", str(runs)],
        cwd=cwd,
        env=_probe_env(bench),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        tail = " / ".join(result.stderr.strip().splitlines()[-3:])
        raise BenchError(f"history probe: exited with {result.returncode}: {tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def figure_history(bench: Bench) -> list[Row]:
    """The history line (and a scheduler's status entry) per run, timed in process, vs one O_APPEND write."""
    cwd = bench.folder("history")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "one-step.yaml", steps_config([("step.py", [])]))
    write(cwd, "probe.py", PROBE)
    runs = 20 if bench.quick else 100
    probes = [_run_probe(bench, cwd, runs) for _ in range(bench.pairs)]
    cold = median([float(probe["cold"]) for probe in probes])  # type: ignore[arg-type]
    warm = median([median(probe["warm"]) for probe in probes])  # type: ignore[arg-type]
    floor = median([median(probe["floor"]) for probe in probes])  # type: ignore[arg-type]
    preimported = " (lynx.history already imported by the runner)" if probes[0]["preimported"] else ""
    return [
        Row(
            "history: one-shot run, import + recorder + its line (cold)",
            fmt_ms(cold),
            f"{floor * 1e6:.0f} us (one O_APPEND write)",
            fmt_diff_ms(cold - floor),
            "<= 2 ms",
            cold <= 0.002,
            samples={"cold_s": [probe["cold"] for probe in probes]},
            note=f"timed inside a process of its own that replays a real run's reporter calls{preimported}; "
            f"lines of {probes[0]['line']} bytes",
        ),
        Row(
            "history: scheduled run, its line + the status entry (warm)",
            fmt_ms(warm),
            f"{floor * 1e6:.0f} us (one O_APPEND write)",
            fmt_diff_ms(warm - floor),
            "<= 2 ms",
            warm <= 0.002,
            samples={"warm_s": [median(probe["warm"]) for probe in probes]},  # type: ignore[arg-type]
        ),
    ]


def _imported(bench: Bench, cwd: Path, source: Path) -> dict[str, int]:
    """The modules a one-shot run of the lynx package in ``source`` imports, with their own import time (us)."""
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-m", "lynx", "start", "-ni", "-cf", "one-step.yaml"],
        cwd=cwd,
        env=_probe_env(bench, source),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise BenchError(f"python -X importtime -m lynx start (from {source}): exited with {result.returncode}")
    found = {}
    for line in result.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            found[match.group(2)] = int(match.group(1))
    return found


def _old_lynx(root: Path, commit: str) -> Path:
    """The lynx package as it was at ``commit``, unpacked from the repository's history."""
    target = root / f"lynx-{commit}"
    if not target.exists():
        try:
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", commit, "lynx"], capture_output=True, timeout=60
            )
        except OSError as error:
            raise SkipFigure(f"git is needed to unpack commit {commit} ({error.strerror})") from None
        if archive.returncode != 0:
            raise SkipFigure(f"commit {commit} is not in this repository's history (a shallow clone?)")
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(target)  # our own repository's history: trusted
    return target


def figure_imports(bench: Bench) -> list[Row]:
    """The modules a one-shot run imports (``-X importtime``) vs the same run at each baseline."""
    cwd = bench.folder("imports")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "one-step.yaml", steps_config([("step.py", [])]))
    now = _imported(bench, cwd, REPO)
    rows = []
    for issues, commit in BASELINES.items():
        before = _imported(bench, cwd, _old_lynx(bench.root, commit))
        new = sorted(set(now) - set(before))
        outside = [name for name in new if name != "lynx" and not name.startswith("lynx.")]
        cost = sum(now[name] for name in outside) / 1e6
        listed = ", ".join(f"{name} {now[name] / 1000:.1f} ms" for name in new) or "none"
        rows.append(
            Row(
                f"imports: one-shot run's modules vs before {issues} ({commit})",
                f"{len(now)} modules",
                f"{len(before)} modules",
                f"+{len(new)} ({len(outside)} outside lynx, {fmt_ms(cost)})",
                "nothing new outside lynx",
                not outside,
                samples={"new": {name: now[name] for name in new}, "gone": sorted(set(before) - set(now))},
                note=f"new since {commit}, with their own import time: {listed}",
            )
        )
    return rows


def figure_before(bench: Bench) -> list[Row]:
    """A plain config (1 step, 20 steps) run once by this Lynx vs the Lynx at each baseline: the new
    keys, the history and the hardening must cost a config without them nothing."""
    cwd = bench.folder("before")
    scripts = [f"step_{number:02d}.py" for number in range(1, 21)]
    for script in scripts:
        write(cwd, script, TRIVIAL_STEP)
    write(cwd, "one-step.yaml", steps_config([(scripts[0], [])]))
    write(cwd, "steps20.yaml", steps_config([(script, []) for script in scripts]))
    configs = {"1 step": "one-step.yaml", "20 steps": "steps20.yaml"}
    return [
        _before_row(bench, cwd, commit, label, config)
        for commit in BASELINES.values()
        for label, config in configs.items()
    ]


def _before_row(bench: Bench, cwd: Path, commit: str, label: str, config: str) -> Row:
    argv = [PYTHON, "-m", "lynx", "start", "-ni", "-cf", config]
    old = _old_lynx(bench.root, commit)

    def run(source: Path, what: str) -> float:
        return run_chain([argv], cwd=cwd, env=_probe_env(bench, source), timeout=bench.timeout, what=what).wall

    a, b = bench.interleave(lambda: run(REPO, f"lynx ({label})"), lambda: run(old, f"lynx {commit} ({label})"))
    la, lb = median(a), median(b)
    value = ratio(la, lb)
    return Row(
        f"before: `lynx start -ni`, {label}, plain config vs Lynx {commit}",
        fmt_ms(la),
        fmt_ms(lb),
        f"{value:.2f}x ({fmt_diff_ms(la - lb)})",
        "<= 1.10x (noise)",
        value <= 1.10,
        samples={"lynx_s": a, "baseline_s": b},
    )


def _fill_history(cwd: Path, count: int) -> int:
    """``count`` copies of the one real record in ``.lynx/runs.jsonl``, each with its own run_id."""
    path = cwd / ".lynx" / "runs.jsonl"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise BenchError("lynx start -ni wrote no history line")
    record = json.loads(lines[-1])
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(count):
            record["run_id"] = f"20261101T000000-{number:012x}"
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")
    return path.stat().st_size


def _stop_schedulers(bench: Bench, cwd: Path) -> None:
    """``lynx stop --all --yes``; whatever is still registered after that is killed by its PID."""
    subprocess.run(
        bench.lynx_argv("stop", "--all", "--yes"), cwd=cwd, env=bench.env, stdin=subprocess.DEVNULL,
        capture_output=True, timeout=60,
    )  # fmt: skip
    for entry in (cwd / ".lynx" / "schedulers").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kill_tree(int(json.loads(entry.read_text(encoding="utf-8"))["pid"]))


def figure_commands(bench: Bench) -> list[Row]:
    """``lynx status``, ``lynx history`` and ``lynx logs`` (100,000 runs in the history) vs ``lynx --help``."""
    for command in ("status", "history", "logs"):
        bench.require_command(command)
    cwd = bench.folder("commands")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "one-step.yaml", steps_config([("step.py", [])]))
    # A schedule that fires on New Year's Day only: the scheduler waits all through the figure.
    write(cwd, "nightly.yaml", "cron:\n  month: 1\n  day: 1\n  hour: 0\n  minute: 0\nsteps:\n  - script: step.py\n")
    bench.run(bench.lynx_argv("start", "-ni", "-cf", "one-step.yaml"), cwd, "lynx start -ni (1 step)")
    count = 2_000 if bench.quick else HISTORY_LINES
    size = _fill_history(cwd, count)
    # A log file near its rotation size (2 MiB), so 'logs' has a long file to find the end of.
    write(
        cwd,
        "nightly.log",
        "".join(f"2026-11-01 00:00:00 INFO {number:>8} " + "x" * 64 + "\n" for number in range(19_000)),
    )
    rows = []
    try:
        bench.run(
            bench.lynx_argv("start", "-bg", "--name", "nightly", "-cf", "nightly.yaml", "-lf", "nightly.log"),
            cwd,
            "lynx start -bg",
        )
        help_argv = bench.lynx_argv("--help")
        # 'history --name' of a name no run has is the worst case: every line is read (never all at once).
        for command in (["status"], ["history"], ["history", "--name", "other"], ["logs", "nightly"]):
            name = " ".join(command)
            a, b = bench.interleave(
                lambda: bench.run(bench.lynx_argv(*command), cwd, f"lynx {name}"),  # noqa: B023 - called at once
                lambda: bench.run(help_argv, cwd, "lynx --help"),
            )
            la, lb = median([f.wall for f in a]), median([f.wall for f in b])
            value = ratio(la, lb)
            rows.append(
                Row(
                    f"commands: `lynx {name}` vs `lynx --help` ({count:,} runs in the history)",
                    fmt_ms(la),
                    fmt_ms(lb),
                    f"{value:.2f}x",
                    "<= 1.30x",
                    value <= 1.30,
                    samples={"lynx_s": [f.wall for f in a], "baseline_s": [f.wall for f in b]},
                )
            )
    finally:
        _stop_schedulers(bench, cwd)
    rows[0].note = (
        f"one background scheduler waiting for its next fire, its log file 1.8 MiB; {count:,} history lines "
        f"as Lynx writes them, {fmt_mib(size)} in one file (rotation keeps at most 2 x 8 MiB)"
    )
    return rows


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "history": figure_history,
    "imports": figure_imports,
    "before": figure_before,
    "commands": figure_commands,
}
