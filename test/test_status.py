"""``lynx status`` and ``lynx logs`` on real background schedulers, read while they run."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from conftest import clean_env, is_gone, lynx_command, run_lynx, wait_for, write_config, write_script

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
FIELDS = {"name", "pid", "state", "config_file", "log_file", "started_at", "next_run", "current_step", "last_run"}


def gate_step(directory: Path) -> Path:
    """A step that waits until the file 'open' exists."""
    return write_script(
        directory,
        "gate.py",
        f"""
        import os, time
        while not os.path.exists({str(directory / "open")!r}):
            time.sleep(0.05)
        print("through the gate")
        """,
    )


def status_json(directory: Path, *names: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = run_lynx("status", "--json", *names, cwd=directory)
    assert "Traceback" not in result.stdout + result.stderr
    return result.returncode, {row["name"]: row for row in json.loads(result.stdout)}


def start(directory: Path, config: Path, *extra: str) -> None:
    result = run_lynx("start", "-bg", "-cf", str(config), *extra, cwd=directory, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_status_of_two_named_schedulers_during_and_between_runs(lynx_dir: Path) -> None:
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    write_script(lynx_dir, "fail.py", "import sys\nsys.exit(3)\n")
    gate_step(lynx_dir)
    alpha = write_config(
        lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: quick.py\n  - script: gate.py\n", "a.yaml"
    )
    beta = write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: fail.py\n", "b.yaml")
    start(lynx_dir, alpha, "-lf", "alpha.log", "--name", "alpha")
    start(lynx_dir, beta, "-kr")  # named after its config file: 'b'; no log file

    # During a run: alpha waits in step 2 at the gate.
    def alpha_in_step_2() -> Any:
        code, rows = status_json(lynx_dir)
        return (code, rows) if rows["alpha"]["current_step"] == 2 else None

    code, rows = wait_for(alpha_in_step_2, timeout=30)  # type: ignore[misc]
    assert code == 0
    assert set(rows) == {"alpha", "b"}
    row = rows["alpha"]
    assert set(row) >= FIELDS
    assert row["state"] == "running"
    assert row["last_run"] is None
    assert row["config_file"] == str(alpha)
    assert row["log_file"] == str(lynx_dir / "alpha.log")
    assert ISO_WITH_OFFSET.match(row["started_at"]) and ISO_WITH_OFFSET.match(row["next_run"])
    assert psutil.Process(row["pid"]).is_running()
    assert rows["b"]["log_file"] is None

    # Between runs: the gate is open, alpha's last run passed; b's runs fail in step 1.
    (lynx_dir / "open").touch()

    def both_between_runs() -> Any:
        code, rows = status_json(lynx_dir)
        done = [rows[name]["state"] == "waiting" and rows[name]["last_run"] for name in ("alpha", "b")]
        return (code, rows) if all(done) else None

    code, rows = wait_for(both_between_runs, timeout=30)  # type: ignore[misc]
    assert code == 0
    last = rows["alpha"]["last_run"]
    assert last["result"] == "ok" and last["failed_step"] is None
    assert ISO_WITH_OFFSET.match(last["started_at"]) and ISO_WITH_OFFSET.match(last["ended_at"])
    assert last["duration_s"] >= 0 and rows["alpha"]["current_step"] is None
    assert datetime.fromisoformat(rows["alpha"]["next_run"]) > datetime.fromisoformat(last["started_at"])
    assert rows["b"]["last_run"]["result"] == "failed" and rows["b"]["last_run"]["failed_step"] == 1

    table = run_lynx("status", cwd=lynx_dir)
    assert table.returncode == 0
    header, *lines = table.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "PID", "STATE", "UPTIME"]
    assert [line.split()[0] for line in lines] == ["alpha", "b"]
    assert "alpha.log" in lines[0] and "discarded" in lines[1]
    assert "failed at step 1" in lines[1]

    # One stopped by name, the other with --all.
    pids = {name: rows[name]["pid"] for name in rows}
    assert run_lynx("stop", "alpha", "-y", cwd=lynx_dir, timeout=40).returncode == 0
    code, rows = status_json(lynx_dir)
    assert code == 0 and set(rows) == {"b"}
    assert run_lynx("stop", "--all", "-y", cwd=lynx_dir, timeout=40).returncode == 0
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    empty = run_lynx("status", cwd=lynx_dir)
    assert empty.returncode == 1
    assert empty.stdout.strip() == "No background Lynx is recorded here; start one with 'lynx start --background'."
    code, rows = status_json(lynx_dir)
    assert code == 1 and rows == {}


def test_a_sigkilled_scheduler_is_shown_dead_and_cleaned_by_stop(lynx_dir: Path) -> None:
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    config = write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: quick.py\n")
    start(lynx_dir, config, "-lf", "x.log")

    def after_one_run() -> Any:
        rows = status_json(lynx_dir)[1]
        return rows if rows["config"]["last_run"] else None

    rows = wait_for(after_one_run, timeout=30)  # type: ignore[assignment]
    record = rows["config"]
    scheduler = psutil.Process(record["pid"])
    created = scheduler.create_time()
    tree = [scheduler, *scheduler.children(recursive=True)]
    for process in tree:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(tree, timeout=10)
    wait_for(lambda: is_gone(record["pid"], created), timeout=10)

    code, rows = status_json(lynx_dir)
    assert code == 1
    assert rows["config"]["state"] == "dead"
    assert rows["config"]["next_run"] is None and rows["config"]["current_step"] is None
    assert " dead " in run_lynx("status", cwd=lynx_dir).stdout

    result = run_lynx("stop", cwd=lynx_dir)  # nothing to ask: it is not signalled
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"The Lynx process (PID {record['pid']}) has already ended; removed the stale record of 'config'." in (
        result.stdout
    )
    assert not (lynx_dir / ".lynx_pid.json").exists()
    code, rows = status_json(lynx_dir)
    assert code == 1 and rows == {}


def test_a_foreground_run_keeps_no_scheduler_entry(lynx_dir: Path) -> None:
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    config = write_config(lynx_dir, "steps:\n  - script: quick.py\n")
    assert run_lynx("start", "-ni", "-cf", str(config), cwd=lynx_dir).returncode == 0
    assert not (lynx_dir / ".lynx" / "schedulers").exists()


def test_logs_prints_the_last_lines_and_needs_a_log_file(lynx_dir: Path) -> None:
    write_script(lynx_dir, "count.py", "for i in range(30):\n    print(f'number {i}')\n")
    config = write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: count.py\n")
    start(lynx_dir, config, "-lf", "x.log", "--name", "logged")
    start(lynx_dir, config, "--name", "quiet")
    wait_for(lambda: "number 29" in (lynx_dir / "x.log").read_text(errors="replace"), timeout=30)

    several = run_lynx("logs", cwd=lynx_dir)
    assert several.returncode == 1
    assert "logged, quiet" in several.stderr and "lynx logs NAME" in several.stderr

    quiet = run_lynx("logs", "quiet", cwd=lynx_dir)
    assert quiet.returncode == 1
    assert "Error: the background Lynx 'quiet' was started without a log file" in quiet.stderr

    assert run_lynx("stop", "quiet", "-y", cwd=lynx_dir, timeout=40).returncode == 0
    snapshot = (lynx_dir / "x.log").read_bytes()
    result = run_lynx("logs", "-n", "5", cwd=lynx_dir)  # one scheduler left: no name needed
    assert result.returncode == 0, result.stderr
    shown = result.stdout.splitlines()
    assert len(shown) == 5
    # The log may have grown meanwhile: what is shown is five consecutive whole lines of it.
    now = (lynx_dir / "x.log").read_text(errors="replace").splitlines()
    assert any(now[index : index + 5] == shown for index in range(len(now) - 4)), (shown, snapshot[-500:])
    default = run_lynx("logs", cwd=lynx_dir)
    assert len(default.stdout.splitlines()) == 20


def test_logs_follow_a_live_scheduler_across_rotations(lynx_dir: Path) -> None:
    counter = lynx_dir / "counter.txt"
    write_script(
        lynx_dir,
        "count.py",
        f"""
        from pathlib import Path
        path = Path({str(counter)!r})
        number = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(number))
        print(f"count {{number}} " + "x" * 200)
        """,
    )
    config = write_config(lynx_dir, "cron:\n  second: '*'\nsteps:\n  - script: count.py\n")
    start(lynx_dir, config, "-lf", "x.log", "-ls", "1500", "-lbc", "3")
    followed = lynx_dir / "followed.txt"
    with open(followed, "wb") as output:
        follower = subprocess.Popen(
            [*lynx_command(), "logs", "-f", "-n", "0"],
            cwd=lynx_dir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    try:

        def counts() -> list[int]:
            return [int(number) for number in re.findall(rb"count (\d+) ", followed.read_bytes())]

        # At least three rotations happen while it follows (each run writes about 700 bytes).
        first = wait_for(counts, timeout=30)[0]  # type: ignore[index]
        wait_for(lambda: counts() and counts()[-1] >= first + 8, timeout=60)
        assert (lynx_dir / "x.log.1").exists()
        seen = counts()
        assert seen == list(range(seen[0], seen[-1] + 1)), seen  # nothing lost or repeated at a rotation
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=20) == 0
        assert b"Traceback" not in followed.read_bytes()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_status_names_a_broken_record_and_shows_the_others(lynx_dir: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    folder = lynx_dir / ".lynx" / "schedulers"
    folder.mkdir(parents=True)
    (folder / "gone.json").write_text(json.dumps({"name": "gone", "pid": ended.pid, "cmdline": ["true"]}))
    (folder / "junk.json").write_text('{"name": "junk", "pid": ')
    (lynx_dir / ".lynx_pid.json").write_text("not json")
    result = run_lynx("status", "--json", cwd=lynx_dir)
    assert result.returncode == 1  # none alive
    assert "Traceback" not in result.stdout + result.stderr
    assert [(row["name"], row["state"]) for row in json.loads(result.stdout)] == [("gone", "dead")]
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2 and all(line.startswith("Warning: ") for line in warnings)
    assert "junk.json" in warnings[0] and ".lynx_pid.json" in warnings[1]
