"""``lynx status`` and ``lynx logs`` on real background schedulers, read while they run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
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


# --- issue 14: status tells running, waiting, ended, dead and lost apart; logs after stop, FIFOs, renames ---


def text_of(path: Path) -> str:
    """A file's text, empty while it does not exist (a scheduler opens its log once it is ready)."""
    return path.read_text(errors="replace") if path.exists() else ""


def table_row(directory: Path, name: str) -> str:
    result = run_lynx("status", name, cwd=directory)
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout.splitlines()[1]


def test_a_running_step_shows_its_run_and_elapsed_time_and_no_past_next_run(lynx_dir: Path) -> None:
    """Issue 14 #10: a hung step: the run's id, start and elapsed time; NEXT RUN is not a time already past."""
    gate_step(lynx_dir)
    config = write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: gate.py\n")
    start(lynx_dir, config, "-lf", "x.log")

    def overdue() -> Any:
        rows = status_json(lynx_dir)[1]
        run = rows["config"]["current_run"]
        return rows if run and run["elapsed_s"] >= 3 else None

    rows = wait_for(overdue, timeout=30)  # type: ignore[assignment]
    row = rows["config"]
    assert row["state"] == "running" and row["current_step"] == 1
    run = row["current_run"]
    assert run["state"] == "running" and run["step"] == 1
    assert ISO_WITH_OFFSET.match(run["started_at"]) and ISO_WITH_OFFSET.match(run["step_started_at"])
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{12}", run["run_id"])
    assert datetime.fromisoformat(row["next_run"]) < datetime.now().astimezone()
    line = table_row(lynx_dir, "config")
    assert re.search(r"running \(step 1, \d+s\)", line), line
    assert "after this run" in line, line

    (lynx_dir / "open").touch()
    wait_for(lambda: status_json(lynx_dir)[1]["config"]["last_run"], timeout=30)
    history = json.loads(run_lynx("history", "--json", cwd=lynx_dir).stdout)
    assert history[-1]["run_id"] == run["run_id"]
    assert status_json(lynx_dir)[1]["config"]["last_run"]["run_id"] == run["run_id"]


def test_a_scheduler_killed_mid_run_shows_the_run_it_lost(lynx_dir: Path) -> None:
    """Issue 14 #10: killed in step 2: dead, and LAST RUN says the run at step 2 was lost."""
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    gate_step(lynx_dir)
    config = write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: quick.py\n  - script: gate.py\n")
    start(lynx_dir, config, "-lf", "x.log")
    rows = wait_for(lambda: (r := status_json(lynx_dir)[1]) and r["config"]["current_step"] == 2 and r, timeout=30)
    running = rows["config"]["current_run"]  # type: ignore[index]
    scheduler = psutil.Process(rows["config"]["pid"])  # type: ignore[index]
    tree = [scheduler, *scheduler.children(recursive=True)]
    for process in tree:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(tree, timeout=10)

    code, rows = status_json(lynx_dir)
    assert code == 1
    row = rows["config"]
    assert row["state"] == "dead" and row["ended"] is None and row["current_step"] is None
    assert row["current_run"] == {**running, "state": "lost", "elapsed_s": None, "step": 2}
    line = table_row(lynx_dir, "config")
    assert " dead " in line and re.search(r"\d\d:\d\d:\d\d lost at step 2", line), line


@pytest.mark.parametrize(
    ("config", "extra", "reason", "code", "shown"),
    [
        ("steps:\n  - script: quick.py\n", (), "done", 0, "run done"),
        ("cron:\n  second: '*/2'\nsteps:\n  - script: fail.py\n", (), "run_failed", 1, "run failed"),
        ("cron:\n  second: '*/2'\nsteps:\n  - script: fail.py\n", ("-kr",), None, None, None),
        ("cron:\n  second: '*'\n  end_date: '{soon}'\nsteps:\n  - script: quick.py\n", (), "schedule_ended", 0, None),
    ],
    ids=["one-shot", "failed-run", "failed-runs-keep-running", "schedule-ran-out"],
)
def test_a_scheduler_that_ended_by_itself_is_ended_not_dead(
    lynx_dir: Path, config: str, extra: tuple[str, ...], reason: str | None, code: int | None, shown: str | None
) -> None:
    """Issue 14 #10: 'dead' meant three things; a scheduler that ended by itself says so, and why."""
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    write_script(lynx_dir, "fail.py", "import sys\nsys.exit(3)\n")
    soon = (datetime.now().astimezone() + timedelta(seconds=3)).strftime("%Y-%m-%d %H:%M:%S")
    path = write_config(lynx_dir, config.replace("{soon}", soon))
    start(lynx_dir, path, "-lf", "x.log", *extra)
    if reason is None:  # -kr: failed runs go on; it is waiting, not ended
        wait_for(lambda: len(json.loads(run_lynx("history", "--json", cwd=lynx_dir).stdout)) >= 2, timeout=30)
        code_now, rows = status_json(lynx_dir)
        assert code_now == 0 and rows["config"]["state"] in ("waiting", "running") and rows["config"]["ended"] is None
        assert run_lynx("stop", "-y", cwd=lynx_dir, timeout=40).returncode == 0
        return
    rows = wait_for(lambda: (r := status_json(lynx_dir)[1]) and r["config"]["state"] == "ended" and r, timeout=30)
    row = rows["config"]  # type: ignore[index]
    assert row["ended"]["reason"] == reason and row["ended"]["exit_code"] == code, row
    assert ISO_WITH_OFFSET.match(row["ended"]["at"]) and row["ended"]["error"] is None
    assert row["uptime_s"] is None and row["next_run"] is None and row["current_run"] is None
    assert run_lynx("status", cwd=lynx_dir).returncode == 1  # none alive
    assert f" ended ({shown or 'no more fire times'})" in table_row(lynx_dir, "config")
    stopped = run_lynx("stop", "-y", cwd=lynx_dir)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "has already ended (" in stopped.stdout


def test_a_waiting_scheduler_whose_entry_stopped_changing_is_shown_stale(lynx_dir: Path) -> None:
    """Issue 14 #10: an entry the scheduler could not update (a full disk) is not shown as if current."""
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    config = write_config(lynx_dir, "cron:\n  crontab: '0 0 1 1 *'\nsteps:\n  - script: quick.py\n")
    start(lynx_dir, config, "-lf", "x.log")
    wait_for(lambda: status_json(lynx_dir)[1]["config"]["next_run"], timeout=30)  # the scheduler's own word
    path = lynx_dir / ".lynx" / "schedulers" / "config.json"
    entry = json.loads(path.read_text())
    past = datetime.now().astimezone() - timedelta(minutes=5)
    entry["next_run"] = past.isoformat(timespec="seconds")
    entry["updated_at"] = (past - timedelta(hours=1)).isoformat(timespec="seconds")
    path.write_text(json.dumps(entry))
    code, rows = status_json(lynx_dir)
    assert code == 0 and rows["config"]["state"] == "waiting" and rows["config"]["stale"] is True
    assert "waiting (entry not updated since " in table_row(lynx_dir, "config")


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr to make the entry unchangeable")
def test_a_scheduler_that_cannot_update_its_entry_says_so_and_says_when_it_can_again(lynx_dir: Path) -> None:
    """Issue 14 #10: no longer silent: once per spell of failures in the log, and when it is current again."""
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    config = write_config(lynx_dir, "cron:\n  second: '*'\nsteps:\n  - script: quick.py\n")
    start(lynx_dir, config, "-lf", "x.log")
    log = lynx_dir / "x.log"
    folder = lynx_dir / ".lynx" / "schedulers"
    wait_for(lambda: "completed successfully" in text_of(log), timeout=30)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        runs = log.read_text().count("Run summary:")
        wait_for(lambda: log.read_text().count("Run summary:") >= runs + 3, timeout=30)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    wait_for(lambda: "config.json is up to date again." in log.read_text(), timeout=30)
    text = log.read_text()
    assert text.count("Cannot update .lynx/schedulers/config.json") == 1, text
    assert "'lynx status' shows an older state until it can" in text


def test_logs_of_a_scheduler_logging_into_a_fifo_say_a_fifo_has_no_end(lynx_dir: Path) -> None:
    """Issue 14 #7: no io.UnsupportedOperation traceback; the FIFO's reader keeps its lines."""
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    config = write_config(lynx_dir, "cron:\n  crontab: '0 0 1 1 *'\nsteps:\n  - script: quick.py\n")
    fifo = lynx_dir / "log.fifo"
    os.mkfifo(fifo)
    start(lynx_dir, config, "-lf", str(fifo))
    for follow in ([], ["-f"]):
        result = run_lynx("logs", *follow, cwd=lynx_dir, timeout=20)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        expected = f"Error: the log file {fifo} of 'config' is a FIFO: it has no end to show"
        assert result.stderr == expected + " (its lines go to whoever reads it)\n"


def test_logs_still_finds_the_log_of_a_stopped_scheduler(lynx_dir: Path) -> None:
    """Issue 14 #15: 'lynx stop' leaves a tombstone that 'lynx logs NAME' reads; status does not list it."""
    write_script(lynx_dir, "quick.py", "print('quick')\n")
    config = write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: quick.py\n")
    start(lynx_dir, config, "-lf", "x.log", "--name", "nightly")
    wait_for(lambda: "completed successfully" in text_of(lynx_dir / "x.log"), timeout=30)
    assert run_lynx("stop", "-y", cwd=lynx_dir, timeout=40).returncode == 0

    result = run_lynx("logs", "nightly", "-n", "1", cwd=lynx_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("Lynx received SIGTERM and has stopped.\n")
    bare = run_lynx("logs", cwd=lynx_dir)
    assert bare.returncode == 1
    assert "'lynx logs NAME' shows the log of one stopped here (nightly)" in bare.stderr
    code, rows = status_json(lynx_dir)
    assert code == 1 and rows == {}
    tombstone = json.loads((lynx_dir / ".lynx" / "stopped" / "nightly.json").read_text())
    assert tombstone["stopped_at"] and tombstone["log_file"] == str(lynx_dir / "x.log")
    assert tombstone["options"]["name"] == "nightly" and tombstone["options"]["log_file"] == "x.log"
    # Started again, it is no longer stopped.
    start(lynx_dir, config, "-lf", "x.log", "--name", "nightly")
    assert not (lynx_dir / ".lynx" / "stopped" / "nightly.json").exists()
    assert run_lynx("stop", "-y", cwd=lynx_dir, timeout=40).returncode == 0


def test_a_renamed_project_folder_keeps_one_state(lynx_dir: Path) -> None:
    """Issue 14 #8: after 'mv a b' the scheduler writes its log (rotating), history and entry in b, never
    re-creates a; status, logs and stop in b see it as it runs."""
    old, new = lynx_dir / "mvA", lynx_dir / "mvB"
    old.mkdir()
    write_script(old, "count.py", "print('x' * 300)\n")
    write_config(old, "cron:\n  second: '*'\nsteps:\n  - script: count.py\n")
    assert run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", "x.log", "-ls", "3000", cwd=old).returncode == 0
    wait_for(lambda: (old / ".lynx" / "runs.jsonl").exists(), timeout=30)
    os.rename(old, new)
    runs = len((new / ".lynx" / "runs.jsonl").read_text().splitlines())
    wait_for(lambda: len((new / ".lynx" / "runs.jsonl").read_text().splitlines()) >= runs + 4, timeout=30)
    wait_for(lambda: (new / "x.log.1").exists(), timeout=30)  # rotated since the move

    assert not old.exists()
    code, rows = status_json(new)
    assert code == 0 and rows["config"]["state"] in ("running", "waiting")
    assert rows["config"]["log_file"] == str(new / "x.log") and rows["config"]["config_file"] == str(
        new / "config.yaml"
    )
    last = datetime.fromisoformat(rows["config"]["last_run"]["started_at"])
    assert (datetime.now().astimezone() - last).total_seconds() < 10
    shown = run_lynx("logs", "-n", "3", cwd=new)
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 3, shown.stdout + shown.stderr
    stopped = run_lynx("stop", "-y", cwd=new, timeout=40)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Stopped the background Lynx 'config'" in stopped.stdout
    assert not old.exists()
