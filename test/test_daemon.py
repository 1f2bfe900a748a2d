"""Background start and stop with real detached processes, pid files and signals."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pexpect
import psutil
import pytest
from conftest import (
    clean_env,
    is_gone,
    kill_processes_in,
    lynx_command,
    marker_step,
    ran,
    run_lynx,
    wait_for,
    write_config,
    write_script,
)

PID_FILE = ".lynx_pid.json"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")
STOPPED = "Lynx received SIGTERM and has stopped."
RECORD_FIELDS = {
    "pid",
    "name",
    "exe",
    "cmdline",
    "status",
    "username",
    "create_time",
    "config_file",
    "log_file",
    "started_at",
}


@pytest.fixture
def workdir(lynx_dir: Path) -> Iterator[Path]:
    """lynx_dir, plus: every process still working in it after the test (schedulers, steps) is killed."""
    yield lynx_dir
    kill_processes_in(lynx_dir)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A ``sleep 60`` that is not Lynx's: nothing may signal it."""
    sleeper = subprocess.Popen(["sleep", "60"])
    # Until it has exec'd, the child still shows this interpreter's command line.
    wait_for(lambda: psutil.Process(sleeper.pid).cmdline() == ["sleep", "60"], timeout=10)
    yield sleeper
    sleeper.kill()
    sleeper.wait()


def schedule_config(directory: Path, script: str) -> Path:
    return write_config(
        directory,
        f"""
        cron:
          second: '*/2'
        steps:
          - script: {script}
        """,
    )


def start_background(directory: Path, config: Path, *extra: str, input: str | None = None) -> Any:
    return run_lynx("start", "-bg", "-cf", str(config), *extra, cwd=directory, input=input, timeout=30)


def read_record(directory: Path) -> dict[str, Any]:
    return json.loads((directory / PID_FILE).read_text(encoding="utf-8"))


def log_text(directory: Path, name: str = "x.log") -> str:
    path = directory / name
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def completed_runs(directory: Path, script: str = "step.py") -> int:
    return log_text(directory).count(f"Step 1 ({script}) completed successfully.")


def schedulers_in(directory: Path) -> list[psutil.Process]:
    """Live detached Lynx schedulers working in ``directory``."""
    root = str(directory.resolve())
    found = []
    for process in psutil.process_iter(["cwd", "cmdline", "status"]):
        if process.info.get("cwd") != root or process.info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if "--detached" in (process.info.get("cmdline") or []):
            found.append(process)
    return found


def read_pid(path: Path) -> tuple[int, float]:
    """The PID a step wrote to ``path`` and that process's create time (read while it is alive)."""
    pid = int(wait_for(lambda: path.exists() and path.read_text().strip(), timeout=20))
    return pid, psutil.Process(pid).create_time()


def fake_record(pid: Any, create_time: Any, **overrides: Any) -> dict[str, Any]:
    record = {
        "pid": pid,
        "name": "python3",
        "exe": sys.executable,
        "cmdline": [sys.executable, "-m", "lynx", "start", "--detached"],
        "status": "sleeping",
        "username": psutil.Process().username(),
        "create_time": create_time,
        "config_file": "/nowhere/config.yaml",
        "log_file": None,
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    record.update(overrides)
    return record


def assert_one_error_line(result: Any) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output


def test_background_start_detaches_and_records_itself(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    # Started from a real terminal, so a scheduler still tied to it would show it.
    terminal = pexpect.spawn(
        lynx_command()[0],
        [*lynx_command()[1:], "start", "-bg", "-lf", "x.log", "-cf", str(config)],
        cwd=str(workdir),
        env=clean_env(),
        encoding="utf-8",
        timeout=30,
    )
    terminal.expect(pexpect.EOF)
    terminal.close()
    output = terminal.before
    assert terminal.exitstatus == 0, output
    assert "Traceback" not in output
    printed = re.search(r"PID (\d+)", output)
    assert printed, output

    record = read_record(workdir)
    assert set(record) == RECORD_FIELDS
    pid = record["pid"]
    assert int(printed.group(1)) == pid
    process = psutil.Process(pid)
    assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    assert abs(process.create_time() - record["create_time"]) <= 0.01
    assert record["name"] == process.name()
    assert record["exe"] == process.exe()
    assert record["cmdline"] == process.cmdline()
    assert record["username"] == process.username()
    assert isinstance(record["status"], str) and record["status"]
    assert record["config_file"] == str(config)
    assert record["log_file"] == str(workdir / "x.log")
    assert datetime.fromisoformat(record["started_at"])
    assert not os.stat(workdir / PID_FILE).st_mode & stat.S_IWOTH

    # Its own session, no controlling terminal, no terminal on its standard streams.
    assert os.getsid(pid) == pid
    assert os.getsid(pid) not in (os.getsid(0), terminal.pid)
    assert process.terminal() is None
    for fd in (0, 1, 2):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        assert not target.startswith(("/dev/pts", "/dev/tty", "/dev/console")), (fd, target)

    # The terminal is closed; the scheduler goes on and its log fills with runs.
    wait_for(lambda: completed_runs(workdir) >= 2, timeout=20)
    assert process.is_running()
    assert len(ran(workdir)) >= 2


def spawn_lynx(directory: Path, *args: str) -> pexpect.spawn:
    """``lynx args`` on a real terminal."""
    return pexpect.spawn(
        lynx_command()[0],
        [*lynx_command()[1:], *args],
        cwd=str(directory),
        env=clean_env(),
        encoding="utf-8",
        timeout=30,
    )


@pytest.mark.parametrize(
    ("answer", "log_name"),
    [("x.log", "x.log"), ("", None)],
    ids=["log-file-named", "enter-discards"],
)
def test_background_without_log_file_asks_for_one_on_a_terminal(
    workdir: Path, answer: str, log_name: str | None
) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    terminal = spawn_lynx(workdir, "start", "-bg", "-cf", str(config))
    terminal.expect_exact("Please enter the name for the log file, else the log information will be discarded")
    terminal.sendline(answer)
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0, terminal.before
    assert "Traceback" not in terminal.before
    record = read_record(workdir)
    wait_for(lambda: len(ran(workdir)) >= 1, timeout=20)
    if log_name is None:
        assert record["log_file"] is None
        assert "discarded" in terminal.before
        assert not [name for name in os.listdir(workdir) if "log" in name and name != PID_FILE]
    else:
        assert record["log_file"] == str(workdir / log_name)
        wait_for(lambda: completed_runs(workdir) >= 1, timeout=20)


@pytest.mark.parametrize("given", [None, "x.log\n"], ids=["dev-null", "piped-text"])
def test_background_without_a_terminal_discards_the_output_without_asking(workdir: Path, given: str | None) -> None:
    """Issue 7 #11: cron, CI and '< /dev/null' get Enter's answer, and are told so; stdin is not read."""
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    result = start_background(workdir, config, input=given)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Please enter the name" not in output
    assert "no terminal to ask for one: the output will be discarded" in result.stdout
    assert read_record(workdir)["log_file"] is None
    wait_for(lambda: len(ran(workdir)) >= 1, timeout=20)
    assert not (workdir / "x.log").exists()
    assert run_lynx("stop", "-y", cwd=workdir, timeout=40).returncode == 0


def test_stop_asks_then_ends_the_scheduler(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    record = read_record(workdir)
    pid, created = record["pid"], record["create_time"]
    wait_for(lambda: completed_runs(workdir) >= 1, timeout=20)

    result = run_lynx("stop", cwd=workdir, input="y\n", timeout=40)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Are you sure you want to terminate the process (PID {pid})? (y/n)" in result.stdout
    assert "Traceback" not in output
    assert is_gone(pid, created)
    assert not (workdir / PID_FILE).exists()
    assert schedulers_in(workdir) == []
    log = log_text(workdir)
    assert log.endswith("\n")
    assert log.splitlines()[-1].endswith(STOPPED)


@pytest.mark.parametrize("flag", ["--yes", "-y"])
def test_stop_yes_needs_no_input(workdir: Path, flag: str) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    record = read_record(workdir)
    result = run_lynx("stop", flag, cwd=workdir, timeout=40)  # stdin is /dev/null
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert is_gone(record["pid"], record["create_time"])
    assert not (workdir / PID_FILE).exists()


def test_stop_declined_or_unanswered_leaves_it_running(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    record = read_record(workdir)
    process = psutil.Process(record["pid"])
    for answer in ("n\n", None):
        result = run_lynx("stop", cwd=workdir, input=answer, timeout=40)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        assert read_record(workdir) == record
    assert run_lynx("stop", "-y", cwd=workdir, timeout=40).returncode == 0


def test_stop_without_pid_file(workdir: Path) -> None:
    result = run_lynx("stop", cwd=workdir, input="y\n")
    assert result.returncode == 1
    assert_one_error_line(result)
    assert "Error: no background Lynx to stop" in result.stderr
    assert ran(workdir) == []


def test_stop_with_a_stale_pid_file(workdir: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(ended.pid).create_time()  # running or a zombie: not reaped yet
    ended.wait()
    (workdir / PID_FILE).write_text(json.dumps(fake_record(ended.pid, created)))
    result = run_lynx("stop", cwd=workdir, input="y\n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"The Lynx process (PID {ended.pid}) has already ended" in result.stdout
    assert "Traceback" not in output
    assert not (workdir / PID_FILE).exists()


@pytest.mark.parametrize(
    "content",
    [
        lambda pid, created: '{"pid": ' + str(pid) + ', "create_time": ',
        lambda pid, created: "",
        lambda pid, created: "null",
        lambda pid, created: json.dumps([pid, created]),
        lambda pid, created: json.dumps({"pid": pid, "create_time": created}),
        lambda pid, created: json.dumps(fake_record(str(pid), created)),
        lambda pid, created: json.dumps(fake_record(pid, str(created))),
        lambda pid, created: json.dumps(fake_record(True, created)),
        lambda pid, created: json.dumps(fake_record(pid, created, cmdline="lynx start")),
    ],
    ids=["truncated", "empty", "null", "list", "missing-fields", "pid-string", "time-string", "pid-bool", "cmdline"],
)
def test_stop_with_a_broken_pid_file_signals_nothing(
    workdir: Path, bystander: subprocess.Popen[bytes], content: Any
) -> None:
    text = content(bystander.pid, psutil.Process(bystander.pid).create_time())
    (workdir / PID_FILE).write_text(text)
    result = run_lynx("stop", "-y", cwd=workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_one_error_line(result)
    assert bystander.poll() is None
    assert (workdir / PID_FILE).read_text() == text
    assert ran(workdir) == []


def test_stop_refuses_a_reused_pid(workdir: Path, bystander: subprocess.Popen[bytes]) -> None:
    created = psutil.Process(bystander.pid).create_time()
    (workdir / PID_FILE).write_text(json.dumps(fake_record(bystander.pid, created - 1000.0)))
    result = run_lynx("stop", "-y", cwd=workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_one_error_line(result)
    assert bystander.poll() is None
    assert ran(workdir) == []


def test_stop_ends_a_running_step_and_everything_it_started(workdir: Path) -> None:
    pids = workdir / "pids"
    pids.mkdir()
    write_script(
        workdir,
        "grandchild.py",
        f"""
        import os, time
        os.setsid()
        open({str(pids / "grandchild")!r}, "w").write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    write_script(
        workdir,
        "child.py",
        f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, {str(workdir / "grandchild.py")!r}])
        open({str(pids / "child")!r}, "w").write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    write_script(
        workdir,
        "step.py",
        f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, {str(workdir / "child.py")!r}])
        open({str(pids / "step")!r}, "w").write(str(os.getpid()))
        print("step is running", flush=True)
        time.sleep(60)
        """,
    )
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    record = read_record(workdir)
    started = [read_pid(pids / name) for name in ("step", "child", "grandchild")]

    result = run_lynx("stop", "-y", cwd=workdir, timeout=40)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert is_gone(record["pid"], record["create_time"])
    for name, (pid, created) in zip(("step", "child", "grandchild"), started):
        assert is_gone(pid, created), f"the {name} (PID {pid}) outlived lynx stop"
    # The scheduler ended its step's whole tree itself; stop's last-resort SIGKILL was not needed.
    assert "Had to kill" not in result.stdout
    assert not (workdir / PID_FILE).exists()
    log = log_text(workdir)
    assert "Step 1 (step.py) interrupted (SIGTERM)" in log
    assert "Step 1 (step.py) was interrupted." in log
    assert log.splitlines()[-1].endswith(STOPPED)


def test_stop_kills_a_step_that_ignores_sigterm(workdir: Path) -> None:
    pid_file = workdir / "step.pid"
    write_script(
        workdir,
        "stubborn.py",
        f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        print("ignoring SIGTERM", flush=True)
        time.sleep(60)
        """,
    )
    config = schedule_config(workdir, "stubborn.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    record = read_record(workdir)
    step_pid, step_created = read_pid(pid_file)
    wait_for(lambda: "ignoring SIGTERM" in log_text(workdir), timeout=20)

    result = run_lynx("stop", "-y", cwd=workdir, timeout=45)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert is_gone(step_pid, step_created)
    assert is_gone(record["pid"], record["create_time"])
    assert not (workdir / PID_FILE).exists()
    assert "killing it (SIGKILL)" in log_text(workdir) + output


def test_scheduler_killed_with_sigkill(workdir: Path) -> None:
    pid_file = workdir / "step.pid"
    write_script(
        workdir,
        "chatty.py",
        f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        for number in range(10 ** 7):
            print(f"line {{number}} " + "x" * 300, flush=True)
            time.sleep(0.0005)
        """,
    )
    config = schedule_config(workdir, "chatty.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    record = read_record(workdir)
    read_pid(pid_file)
    wait_for(lambda: log_text(workdir).count("\n") > 500, timeout=20)
    scheduler = psutil.Process(record["pid"])
    tree = [scheduler, *scheduler.children(recursive=True)]
    scheduler.kill()  # mid-output
    for process in tree[1:]:  # the step would be orphaned: end it too
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(tree, timeout=10)
    wait_for(lambda: is_gone(record["pid"], record["create_time"]), timeout=10)

    log = log_text(workdir)
    assert log.endswith("\n"), repr(log[-200:])
    assert LOG_LINE.match(log.splitlines()[-1]), repr(log.splitlines()[-1])

    result = run_lynx("stop", cwd=workdir, input="y\n")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "has already ended" in result.stdout
    assert "Traceback" not in output
    assert not (workdir / PID_FILE).exists()

    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    again = start_background(workdir, config, "-lf", "y.log")
    assert again.returncode == 0, again.stdout + again.stderr
    new_record = read_record(workdir)
    assert new_record["pid"] != record["pid"]
    wait_for(lambda: ran(workdir), timeout=20)
    assert run_lynx("stop", "-y", cwd=workdir, timeout=40).returncode == 0


def test_only_one_background_lynx_per_directory(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    command = [*lynx_command(), "start", "-bg", "-lf", "x.log", "-cf", str(config)]
    racers = [
        subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for _ in range(2)
    ]
    outcomes = [(*racer.communicate(timeout=30), racer.returncode) for racer in racers]
    codes = sorted(code for _, _, code in outcomes)
    assert codes == [0, 1], outcomes
    loser_out, loser_err, _ = next(outcome for outcome in outcomes if outcome[2] == 1)
    assert "Error: a background Lynx named 'config' is already running here" in loser_err
    assert "lynx stop config" in loser_err
    assert "Traceback" not in loser_out + loser_err
    record = read_record(workdir)
    assert [process.pid for process in schedulers_in(workdir)] == [record["pid"]]

    # A second start later is refused too.
    result = start_background(workdir, config, "-lf", "x.log")
    assert result.returncode == 1
    assert_one_error_line(result)
    assert "Error: a background Lynx named 'config' is already running here" in result.stderr
    assert read_record(workdir) == record
    assert [process.pid for process in schedulers_in(workdir)] == [record["pid"]]


# --- regressions from review -------------------------------------------------------------------


def test_a_stop_waiting_for_its_answer_does_not_block_another_stop(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    record = read_record(workdir)
    asking_output = workdir / "asking-stop.txt"
    with open(asking_output, "wb") as output:
        asking = subprocess.Popen(
            [*lynx_command(), "stop"],
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    try:
        wait_for(lambda: "Are you sure" in asking_output.read_text(errors="replace"), timeout=20)
        assert asking.poll() is None
        try:
            result = run_lynx("stop", "--yes", cwd=workdir, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("'lynx stop --yes' waited for the other stop's question to be answered")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert is_gone(record["pid"], record["create_time"])
        assert not (workdir / PID_FILE).exists()

        # The first stop, answered late, finds nothing left to stop and signals nothing.
        assert asking.stdin is not None
        asking.stdin.write(b"y\n")
        asking.stdin.close()
        assert asking.wait(timeout=30) == 1
        late = asking_output.read_text(errors="replace")
        assert "Traceback" not in late
        assert "Terminating process" not in late
    finally:
        if asking.poll() is None:
            asking.kill()
            asking.wait(timeout=10)


# --- issue 7: the background scheduler and its pid file -----------------------------------------


def entry_file(directory: Path, name: str = "config") -> Path:
    return directory / ".lynx" / "schedulers" / f"{name}.json"


def detached_schedulers_of(config: Path) -> list[psutil.Process]:
    """Live detached schedulers running ``config``, wherever their working directory is."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info.get("cmdline") or []
        if process.info.get("status") != psutil.STATUS_ZOMBIE and "--detached" in cmdline and str(config) in cmdline:
            found.append(process)
    return found


def test_background_start_where_no_record_can_be_written_starts_nothing(workdir: Path) -> None:
    """Issue 7 #8: from /proc the record cannot be written: one Error line, and no scheduler left running."""
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    try:
        result = run_lynx("start", "-bg", "-cf", str(config), "-lf", str(workdir / "x.log"), cwd=Path("/proc"))
        assert result.returncode == 1, result.stdout + result.stderr
        assert_one_error_line(result)
        assert "cannot record a background Lynx in /proc" in result.stderr
        assert detached_schedulers_of(config) == []
        assert ran(workdir) == []
    finally:
        for process in detached_schedulers_of(config):
            process.kill()


@pytest.mark.parametrize("record_in", ["pid-file", "entry"])
def test_stop_never_signals_a_process_that_is_not_a_lynx_scheduler(
    workdir: Path, bystander: subprocess.Popen[bytes], record_in: str
) -> None:
    """Issue 7 #9: a record describing one of your own processes exactly (command line, create time)."""
    process = psutil.Process(bystander.pid)
    record = fake_record(bystander.pid, process.create_time(), cmdline=process.cmdline())
    if record_in == "pid-file":
        path = workdir / PID_FILE
    else:
        path = entry_file(workdir, "sleeper")
        path.parent.mkdir(parents=True)
        record["name"] = "sleeper"
    path.write_text(json.dumps(record))
    # No Lynx scheduler runs here: status says so.
    status = run_lynx("status", "--json", cwd=workdir)
    assert status.returncode == 1, status.stdout + status.stderr
    assert [row["state"] for row in json.loads(status.stdout)] == ["dead"]
    result = run_lynx("stop", "-y", cwd=workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_one_error_line(result)
    assert "is not a Lynx scheduler; it was not signalled" in result.stderr
    assert bystander.poll() is None
    # The record describes no Lynx: it is cleaned up, as one whose PID was reused.
    assert not path.exists()


def test_stop_refuses_a_reused_pid_in_an_entry(workdir: Path, bystander: subprocess.Popen[bytes]) -> None:
    """The kernel's start time decides: same PID and command line, another start: another process."""
    process = psutil.Process(bystander.pid)
    ticks = int(Path(f"/proc/{bystander.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    record = fake_record(bystander.pid, process.create_time(), cmdline=process.cmdline())
    record.update(name="old", start_ticks=ticks - 100, boot_id=boot_id)
    path = entry_file(workdir, "old")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    result = run_lynx("stop", "-y", cwd=workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_one_error_line(result)
    assert f"PID {bystander.pid} now belongs to another process" in result.stderr
    assert bystander.poll() is None
    assert not path.exists()


def test_a_stepped_clock_does_not_hide_a_live_scheduler(workdir: Path) -> None:
    """Issue 7 #10: with create_time off by 1.5 s, the scheduler is still recognised, refused a twin, and stopped."""
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    pid = read_record(workdir)["pid"]
    process = psutil.Process(pid)
    for path in (workdir / PID_FILE, entry_file(workdir)):
        record = json.loads(path.read_text())
        record["create_time"] += 1.5
        path.write_text(json.dumps(record))
    wait_for(lambda: completed_runs(workdir) >= 1, timeout=20)

    twin = start_background(workdir, config, "-lf", "x.log")
    assert twin.returncode == 1, twin.stdout + twin.stderr
    assert "already running" in twin.stderr
    assert [each.pid for each in schedulers_in(workdir)] == [pid]

    result = run_lynx("stop", "-y", cwd=workdir, timeout=40)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "has already ended" not in result.stdout
    assert f"Stopped the background Lynx 'config' (PID {pid})" in result.stdout
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert not (workdir / PID_FILE).exists()
    assert not entry_file(workdir).exists()


# --- issue 8: named background schedulers ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-bg", "--name", "two words"], "scheduler name 'two words' is not valid"),
        (["-bg", "--name", "../up"], "scheduler name '../up' is not valid"),
        (["-bg", "--name", ".hidden"], "scheduler name '.hidden' is not valid"),
        (["-bg", "--name", ""], "scheduler name '' is not valid"),
        (["-ni", "--name", "fine"], "--name names a background scheduler"),
    ],
    ids=["space", "path", "dot", "empty", "foreground"],
)
def test_bad_scheduler_names_are_usage_errors(workdir: Path, args: list[str], message: str) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    result = run_lynx("start", "-cf", str(config), "-lf", "x.log", *args, cwd=workdir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_error_line(result)
    assert message in result.stderr
    assert schedulers_in(workdir) == []
    assert not (workdir / PID_FILE).exists()


@pytest.mark.parametrize("config_name", ["my config.yaml", "conf/my run.yaml", "conf/ünï.yaml"])
def test_a_config_file_name_that_is_no_valid_name_needs_name(workdir: Path, config_name: str) -> None:
    """Issue 14 #15: the message says which letters, and how to name the scheduler instead."""
    marker_step(workdir, "step.py")
    (workdir / "conf").mkdir()
    config = write_config(workdir, "steps:\n  - script: step.py\n", name=config_name)
    result = run_lynx("start", "-bg", "-cf", str(config), "-lf", "x.log", cwd=workdir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_error_line(result)
    stem = Path(config_name).stem
    assert f"the config file's name '{stem}' is not valid: use ASCII letters" in result.stderr
    assert "name the scheduler with --name NAME" in result.stderr
    assert schedulers_in(workdir) == []
    assert not (workdir / "x.log").exists()
    named = run_lynx("start", "-bg", "-cf", str(config), "-lf", "x.log", "--name", "fine", cwd=workdir)
    assert named.returncode == 0, named.stdout + named.stderr
    assert run_lynx("stop", "-y", cwd=workdir, timeout=40).returncode == 0


def test_two_named_schedulers_stopped_by_name_and_with_all(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    first = start_background(workdir, config, "-lf", "a.log", "--name", "alpha")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "as 'alpha'" in first.stdout and "lynx stop alpha" in first.stdout
    assert start_background(workdir, config, "-lf", "b.log", "--name", "beta").returncode == 0
    alpha = json.loads(entry_file(workdir, "alpha").read_text())
    beta = json.loads(entry_file(workdir, "beta").read_text())
    assert sorted(each.pid for each in schedulers_in(workdir)) == sorted([alpha["pid"], beta["pid"]])
    # .lynx_pid.json describes the newest, with exactly the keys it always had.
    assert set(read_record(workdir)) == RECORD_FIELDS
    assert read_record(workdir)["pid"] == beta["pid"]

    again = start_background(workdir, config, "-lf", "a.log", "--name", "alpha")
    assert again.returncode == 1
    assert_one_error_line(again)
    assert "named 'alpha' is already running here" in again.stderr and "lynx stop alpha" in again.stderr

    # Several and none named, no terminal: the choices are named, nothing is signalled.
    bare = run_lynx("stop", "-y", cwd=workdir)
    assert bare.returncode == 1, bare.stdout + bare.stderr
    assert_one_error_line(bare)
    assert "alpha, beta" in bare.stderr and "lynx stop --all" in bare.stderr
    assert len(schedulers_in(workdir)) == 2

    unknown = run_lynx("stop", "gamma", "-y", cwd=workdir)
    assert unknown.returncode == 1
    assert "no background Lynx named 'gamma' here; recorded here: alpha, beta" in unknown.stderr

    by_name = run_lynx("stop", "beta", "-y", cwd=workdir, timeout=40)
    assert by_name.returncode == 0, by_name.stdout + by_name.stderr
    assert is_gone(beta["pid"], beta["create_time"])
    assert [each.pid for each in schedulers_in(workdir)] == [alpha["pid"]]
    assert not entry_file(workdir, "beta").exists()
    assert read_record(workdir)["pid"] == alpha["pid"]  # the newest one left

    assert start_background(workdir, config, "-lf", "c.log", "--name", "gamma").returncode == 0
    gamma = json.loads(entry_file(workdir, "gamma").read_text())
    every = run_lynx("stop", "--all", "-y", cwd=workdir, timeout=60)
    assert every.returncode == 0, every.stdout + every.stderr
    assert "Traceback" not in every.stdout + every.stderr
    assert is_gone(alpha["pid"], alpha["create_time"]) and is_gone(gamma["pid"], gamma["create_time"])
    assert schedulers_in(workdir) == []
    assert not (workdir / PID_FILE).exists()
    assert list((workdir / ".lynx" / "schedulers").iterdir()) == []


def test_bare_stop_with_several_asks_which_on_a_terminal(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    for name in ("alpha", "beta"):
        assert start_background(workdir, config, "-lf", f"{name}.log", "--name", name).returncode == 0
    beta = json.loads(entry_file(workdir, "beta").read_text())
    terminal = spawn_lynx(workdir, "stop")
    terminal.expect_exact("Which one do you want to stop?")
    terminal.sendline("2")
    terminal.expect_exact(f"Are you sure you want to terminate the process (PID {beta['pid']})? (y/n)")
    terminal.sendline("y")
    terminal.expect(pexpect.EOF, timeout=40)
    terminal.close()
    assert terminal.exitstatus == 0, terminal.before
    assert is_gone(beta["pid"], beta["create_time"])
    assert [json.loads(entry_file(workdir, "alpha").read_text())["pid"]] == [p.pid for p in schedulers_in(workdir)]


def test_racing_starts_of_one_name_have_one_winner(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    command = [*lynx_command(), "start", "-bg", "-lf", "x.log", "-cf", str(config), "--name", "same"]
    racers = [
        subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=clean_env(),
        )
        for _ in range(3)
    ]
    codes = sorted(racer.wait(timeout=30) for racer in racers)
    assert codes == [0, 1, 1]
    assert [each.pid for each in schedulers_in(workdir)] == [json.loads(entry_file(workdir, "same").read_text())["pid"]]


@pytest.mark.parametrize("script", ["schedular.py", "scheduler.py"])
def test_the_original_lynx_six_key_pid_file(workdir: Path, script: str) -> None:
    """The original Lynx recorded only pid, name, exe, cmdline, status, username of 'python schedular.py'."""
    write_script(workdir, script, "import time\ntime.sleep(120)\n")
    original = subprocess.Popen([sys.executable, script, "--config-file", "conf/config.yaml"], cwd=workdir)
    try:
        process = psutil.Process(original.pid)
        wait_for(lambda: script in " ".join(process.cmdline()), timeout=10)
        keys = ("pid", "name", "exe", "cmdline", "status", "username")
        record = {key: getattr(process, key)() if key != "pid" else process.pid for key in keys}
        (workdir / PID_FILE).write_text(json.dumps(record))
        result = run_lynx("stop", "-y", cwd=workdir, timeout=40)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert original.wait(timeout=20) is not None
        assert not (workdir / PID_FILE).exists()
    finally:
        if original.poll() is None:
            original.kill()
            original.wait()


@pytest.mark.parametrize("extra", [False, True], ids=["six-keys", "extra-keys"])
def test_a_pid_file_of_an_ended_process_with_other_keys_is_read(workdir: Path, extra: bool) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(ended.pid).create_time()
    ended.wait()
    record = {key: value for key, value in fake_record(ended.pid, created).items() if key in RECORD_FIELDS}
    record = {key: record[key] for key in ("pid", "name", "exe", "cmdline", "status", "username")}
    if extra:
        record.update(create_time=created, config_file="/x/c.yaml", future_key={"a": 1}, version="9.9")
    (workdir / PID_FILE).write_text(json.dumps(record))
    result = run_lynx("stop", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"The Lynx process (PID {ended.pid}) has already ended" in result.stdout
    assert not (workdir / PID_FILE).exists()


# --- what a review of issues 7 and 8 found ---------------------------------------------------------


def test_a_program_that_only_names_scheduler_py_is_never_signalled(workdir: Path) -> None:
    """The original Lynx's scheduler is Python running schedular.py/scheduler.py, not any program naming it."""
    (workdir / "scheduler.py").write_text("")
    tail = subprocess.Popen(["tail", "-f", "scheduler.py"], cwd=workdir, stdout=subprocess.DEVNULL)
    try:
        process = psutil.Process(tail.pid)
        wait_for(lambda: process.cmdline() == ["tail", "-f", "scheduler.py"], timeout=10)
        record = fake_record(tail.pid, process.create_time(), cmdline=process.cmdline(), name="tail")
        (workdir / PID_FILE).write_text(json.dumps(record))
        result = run_lynx("stop", "-y", cwd=workdir)
        assert result.returncode == 1, result.stdout + result.stderr
        assert_one_error_line(result)
        assert "is not a Lynx scheduler; it was not signalled" in result.stderr
        assert tail.poll() is None
    finally:
        tail.kill()
        tail.wait()


def test_stop_all_stops_the_live_schedulers_and_reports_the_rest(
    workdir: Path, bystander: subprocess.Popen[bytes]
) -> None:
    """A reused PID's entry and an unreadable entry are reported (exit 1), and keep nobody from being stopped."""
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log", "--name", "real").returncode == 0
    (scheduler,) = schedulers_in(workdir)
    process = psutil.Process(bystander.pid)
    ghost = fake_record(bystander.pid, process.create_time() - 100, cmdline=process.cmdline(), name="ghost")
    (workdir / ".lynx" / "schedulers" / "ghost.json").write_text(json.dumps(ghost))
    (workdir / ".lynx" / "schedulers" / "junk.json").write_text('{"name": "junk"')

    result = run_lynx("stop", "--all", "-y", cwd=workdir)

    assert result.returncode == 1, result.stdout + result.stderr
    assert_one_error_line(result)
    assert "Stopped the background Lynx 'real'" in result.stdout
    assert f"PID {bystander.pid} now belongs to another process" in result.stderr
    assert "junk.json: cannot read it" in result.stderr
    assert is_gone(scheduler.pid, scheduler.create_time())
    assert bystander.poll() is None
    assert not (workdir / ".lynx" / "schedulers" / "ghost.json").exists()
    assert (workdir / ".lynx" / "schedulers" / "junk.json").exists()


def test_an_unreadable_entry_blocks_only_a_start_of_its_own_name(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    (workdir / ".lynx" / "schedulers").mkdir(parents=True)
    (workdir / ".lynx" / "schedulers" / "junk.json").write_text('{"name": "junk"')

    same = start_background(workdir, config, "-lf", "x.log", "--name", "junk")
    assert same.returncode == 1, same.stdout + same.stderr
    assert_one_error_line(same)
    assert "junk.json: cannot read it" in same.stderr
    assert "remove it if no background Lynx named 'junk' runs here" in same.stderr
    assert schedulers_in(workdir) == []

    other = start_background(workdir, config, "-lf", "x.log", "--name", "ok")
    assert other.returncode == 0, other.stdout + other.stderr
    assert len(schedulers_in(workdir)) == 1
    assert run_lynx("stop", "ok", "-y", cwd=workdir).returncode == 0


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr to make the state folder unchangeable")
def test_stop_says_when_the_record_of_a_stopped_scheduler_cannot_be_removed(workdir: Path) -> None:
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    (scheduler,) = schedulers_in(workdir)
    folder = workdir / ".lynx" / "schedulers"
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        result = run_lynx("stop", "-y", cwd=workdir)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_one_error_line(result)
    assert "Terminating process ..." in result.stdout
    assert "the background Lynx 'config' was stopped, but cannot remove the record of 'config'" in result.stderr
    assert is_gone(scheduler.pid, scheduler.create_time())
    # The next stop finds it ended and cleans up.
    again = run_lynx("stop", "-y", cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "has already ended" in again.stdout


def test_a_background_scheduler_logs_into_a_fifo(workdir: Path) -> None:
    """The launcher does not open a FIFO to check it (that would wait for a reader, then end its input)."""
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    fifo = workdir / "log.fifo"
    os.mkfifo(fifo)
    started = start_background(workdir, config, "-lf", str(fifo))
    assert started.returncode == 0, started.stdout + started.stderr
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while "Step 1 (step.py) completed successfully." not in "".join(lines):
            line = reader.stdout.readline()  # type: ignore[union-attr]
            assert line, "the FIFO was closed before a run completed"
            lines.append(line)
        assert "Lynx is scheduled" in "".join(lines)
    finally:
        assert run_lynx("stop", "-y", cwd=workdir).returncode == 0
        reader.kill()
        reader.wait()


def test_logs_of_an_original_lynx_pid_file_says_it_records_no_log(workdir: Path) -> None:
    command = [sys.executable, "-c", "import time; time.sleep(60)", "schedular.py"]
    sleeper = subprocess.Popen(command)
    try:
        process = psutil.Process(sleeper.pid)
        wait_for(lambda: process.cmdline() == command, timeout=10)
        record = {key: fake_record(sleeper.pid, 0)[key] for key in ("pid", "name", "exe", "status", "username")}
        record["cmdline"] = process.cmdline()
        (workdir / PID_FILE).write_text(json.dumps(record))
        result = run_lynx("logs", cwd=workdir)
        assert result.returncode == 1
        assert_one_error_line(result)
        assert "(written by an earlier Lynx) does not say where its scheduler logs" in result.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(
    "command",
    [
        # The boot of Lynx before its scheduler waited for its record.
        [sys.executable, "-c", "import time; time.sleep(60); from lynx.cli import main; main()", "start", "--detached"],
        # The original Lynx, with an interpreter option before its script.
        [sys.executable, "-u", "schedular.py", "--config-file", "conf/config.yaml"],
    ],
    ids=["earlier-boot", "python-option"],
)
def test_schedulers_of_earlier_versions_are_still_recognised_and_stopped(workdir: Path, command: list[str]) -> None:
    write_script(workdir, "schedular.py", "import time\ntime.sleep(60)\n")
    scheduler = subprocess.Popen(command, cwd=workdir)
    try:
        process = psutil.Process(scheduler.pid)
        wait_for(lambda: process.cmdline() == command, timeout=10)
        keys = ("pid", "name", "exe", "cmdline", "status", "username")
        record = {key: getattr(process, key)() if key != "pid" else process.pid for key in keys}
        (workdir / PID_FILE).write_text(json.dumps(record))
        status = run_lynx("status", "--json", cwd=workdir)
        assert [row["state"] for row in json.loads(status.stdout)] == ["waiting"], status.stdout + status.stderr
        result = run_lynx("stop", "-y", cwd=workdir, timeout=40)
        assert result.returncode == 0, result.stdout + result.stderr
        assert scheduler.wait(timeout=20) is not None
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()


# --- issue 14: the background scheduler, hardened (second round) ----------------------------------


PLANTED = ("json", "logging", "yaml", "click", "psutil", "apscheduler", "site", "encodings")


def plant_modules(directory: Path) -> Path:
    """Modules in ``directory`` named like what Lynx imports; each leaves a mark and exits if imported."""
    marks = directory / "planted"
    marks.mkdir()
    for module in PLANTED:
        (directory / f"{module}.py").write_text(
            f"open({str(marks / module)!r}, 'w').close()\nraise SystemExit(3)\n", encoding="utf-8"
        )
    return marks


def test_the_background_scheduler_imports_nothing_from_its_directory(workdir: Path) -> None:
    """Issue 14 #1: 'python -c' puts the working directory first on sys.path; the boot must not import from it."""
    marks = plant_modules(workdir)
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    started = start_background(workdir, config, "-lf", "x.log")
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: completed_runs(workdir) >= 2, timeout=30)
    assert list(marks.iterdir()) == []
    assert [each.pid for each in schedulers_in(workdir)] == [read_record(workdir)["pid"]]
    assert run_lynx("stop", "-y", cwd=workdir, timeout=40).returncode == 0
    assert list(marks.iterdir()) == []


def interpreters() -> list[str]:
    """This Python, and the Pythons 3.9 to 3.13 of pyenv where they are installed."""
    found = [sys.executable]
    for version in ("3.9", "3.10", "3.11", "3.12", "3.13"):
        for python in sorted(Path("/root/.pyenv/versions").glob(f"{version}.*/bin/python{version}")):
            found.append(str(python))
            break
    return found


@pytest.mark.parametrize("python", interpreters())
def test_the_boot_takes_the_working_directory_off_the_path_on_every_python(tmp_path: Path, python: str) -> None:
    """Issue 14 #1 on each Python: the boot's own code, run with a stand-in Lynx that reports what it imported."""
    from lynx.boot import boot_command

    project = tmp_path / "project"
    project.mkdir()
    marks = plant_modules(project)
    root = tmp_path / "checkout"
    (root / "lynx").mkdir(parents=True)
    (root / "lynx" / "__init__.py").write_text("")
    (root / "lynx" / "cli.py").write_text(
        "import json, logging, sys\n"
        "def main():\n"
        "    print(json.dumps({'json': json.__file__, 'logging': logging.__file__, 'path': sys.path,"
        " 'argv': sys.argv[1:]}))\n"
    )
    command = boot_command(["start", "--detached"], python=python, root=str(root))
    env = {key: value for key, value in clean_env().items() if not key.startswith("PYTHON")}
    boot = subprocess.run(command, cwd=project, input=b"go", capture_output=True, env=env, timeout=60)
    assert boot.returncode == 0, boot.stderr.decode(errors="replace")
    said = json.loads(boot.stdout)
    assert list(marks.iterdir()) == []
    assert said["argv"] == ["start", "--detached"]
    assert said["path"][0] == str(root)
    assert "" not in said["path"] and str(project) not in said["path"] and "." not in said["path"]
    for module in ("json", "logging"):
        assert not said[module].startswith(str(project)), said


def test_a_background_start_that_cannot_schedule_says_so_before_it_detaches(workdir: Path) -> None:
    """Issue 14 #2: a TZ whose local zone cannot be told: -bg fails like -ni and validate (exit 2), starts nothing."""
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    env = clean_env(TZ="CET-1CEST,M3.5.0,M10.5.0/3")
    once = run_lynx("start", "-ni", "-cf", str(config), cwd=workdir, env=env)
    checked = run_lynx("validate", "-cf", str(config), cwd=workdir, env=env)
    background = run_lynx("start", "-bg", "-cf", str(config), "-lf", "x.log", cwd=workdir, env=env)
    assert once.returncode == checked.returncode == background.returncode == 2, background.stdout + background.stderr
    assert_one_error_line(background)
    assert "Error: cron: the local time zone cannot be told" in background.stderr
    assert background.stderr == once.stderr == checked.stderr
    assert "running in the background" not in background.stdout
    assert schedulers_in(workdir) == []
    assert not (workdir / "x.log").exists()
    assert not (workdir / PID_FILE).exists()
    assert not list((workdir / ".lynx" / "schedulers").glob("*.json"))


def fake_slurm(directory: Path, pings_answered: int) -> dict[str, str]:
    """srun, squeue, scancel and scontrol on PATH; 'scontrol ping' answers only the first ``pings_answered`` times."""
    bin_dir = directory / "fake-bin"
    bin_dir.mkdir()
    count = directory / "pings"
    for command in ("srun", "squeue", "scancel"):
        (bin_dir / command).write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "scontrol").write_text(
        "#!/bin/sh\n"
        f"echo x >> {str(count)!r}\n"
        f"if [ $(wc -l < {str(count)!r}) -le {pings_answered} ]; then\n"
        "  echo 'Slurmctld(primary) at lynx1 is UP'; exit 0\n"
        "fi\n"
        "echo 'Slurmctld(primary) at lynx1 is DOWN'; exit 1\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_check_that_fails_only_in_the_detached_scheduler_reaches_the_user(workdir: Path) -> None:
    """Issue 14 #2: whatever the detached scheduler finds before it is ready is lynx start -bg's own
    Error line and exit code; its record is removed, nothing runs (here: the SLURM controller went away)."""
    marker_step(workdir, "step.py")
    config = write_config(workdir, "cron:\n  second: '*/2'\nsteps:\n  - script: step.py\n    slurm: {}\n")
    env = fake_slurm(workdir, pings_answered=1)  # the launcher's check passes, the scheduler's does not
    result = run_lynx("start", "-bg", "-cf", str(config), "-lf", "x.log", cwd=workdir, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_error_line(result)
    assert "the SLURM controller does not answer (scontrol ping: Slurmctld(primary) at lynx1 is DOWN)" in result.stderr
    assert "running in the background" not in result.stdout
    assert len((workdir / "pings").read_text().splitlines()) == 2
    assert schedulers_in(workdir) == []
    assert not (workdir / PID_FILE).exists()
    assert not list((workdir / ".lynx" / "schedulers").glob("*.json"))
    assert ran(workdir) == []
    status = run_lynx("status", cwd=workdir)
    assert status.returncode == 1 and "No background Lynx is recorded here" in status.stdout


def test_a_refused_background_start_leaves_no_log_file(workdir: Path) -> None:
    """Issue 14 #15: a start refused because its name runs already creates no -lf file."""
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log").returncode == 0
    again = start_background(workdir, config, "-lf", "other.log")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "already running here" in again.stderr
    assert not (workdir / "other.log").exists()
    assert run_lynx("stop", "-y", cwd=workdir, timeout=40).returncode == 0


def test_stop_shows_the_command_line_the_user_typed(workdir: Path) -> None:
    """Issue 14 #15: not the ~450-character boot command."""
    marker_step(workdir, "step.py")
    config = schedule_config(workdir, "step.py")
    assert start_background(workdir, config, "-lf", "x.log", "--name", "nightly", "-kr").returncode == 0
    result = run_lynx("stop", cwd=workdir, input="y\n", timeout=40)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"  command: lynx start -bg -cf {config} -lf x.log --name nightly -kr\n" in result.stdout
    assert "import os" not in result.stdout and "--detached" not in result.stdout


def copy_folder(source: Path, target: Path) -> None:
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


def test_a_copied_project_folder_does_not_take_the_originals_scheduler_for_its_own(workdir: Path) -> None:
    """Issue 14 #3: after 'cp -a' the copy's records describe the original's scheduler: status leaves it out,
    a start there is not refused, and 'lynx stop' there signals nothing."""
    original, copy = workdir / "original", workdir / "copy"
    original.mkdir()
    marker_step(original, "step.py")
    write_config(original, "cron:\n  second: '*/2'\nsteps:\n  - script: step.py\n")
    assert run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", "x.log", cwd=original).returncode == 0
    record = read_record(original)
    scheduler = psutil.Process(record["pid"])
    copy_folder(original, copy)

    status = run_lynx("status", "--json", cwd=copy)
    assert status.returncode == 1, status.stdout + status.stderr
    assert json.loads(status.stdout) == []
    assert f"describes a background Lynx of {original}, not of this directory" in status.stderr
    started = run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", "x.log", cwd=copy)
    assert started.returncode == 0, started.stdout + started.stderr
    own = read_record(copy)
    assert own["pid"] != record["pid"]
    stopped = run_lynx("stop", "-y", cwd=copy, timeout=40)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"Stopped the background Lynx 'config' (PID {own['pid']})" in stopped.stdout
    assert scheduler.is_running() and scheduler.status() != psutil.STATUS_ZOMBIE
    assert run_lynx("status", cwd=original).returncode == 0

    # A second copy, stopped without starting anything there: the copied record goes, the original runs on.
    second = workdir / "second"
    copy_folder(original, second)
    result = run_lynx("stop", "-y", cwd=second, timeout=40)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "it was not signalled; removed the record here" in result.stdout
    assert scheduler.is_running() and scheduler.status() != psutil.STATUS_ZOMBIE
    assert not (second / ".lynx" / "schedulers" / "config.json").exists()
    assert run_lynx("stop", "-y", cwd=original, timeout=40).returncode == 0
    assert is_gone(scheduler.pid, record["create_time"])


def test_a_record_naming_this_directory_but_describing_a_scheduler_elsewhere_is_not_acted_on(workdir: Path) -> None:
    """Issue 14 #3: a record copied in with this directory's identity forged: the process works elsewhere."""
    home, other = workdir / "home", workdir / "other"
    home.mkdir()
    other.mkdir()
    marker_step(home, "step.py")
    write_config(home, "cron:\n  second: '*/2'\nsteps:\n  - script: step.py\n")
    assert run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", "x.log", cwd=home).returncode == 0
    entry = json.loads(entry_file(home).read_text())
    here = os.stat(other)
    entry["directory"] = {"path": str(other), "device": here.st_dev, "inode": here.st_ino}
    entry_file(other).parent.mkdir(parents=True)
    entry_file(other).write_text(json.dumps(entry))
    scheduler = psutil.Process(entry["pid"])

    status = run_lynx("status", "--json", cwd=other)
    assert status.returncode == 1 and json.loads(status.stdout) == [], status.stdout + status.stderr
    twin = run_lynx("start", "-bg", "-cf", str(home / "config.yaml"), cwd=other)
    assert twin.returncode == 0, twin.stdout + twin.stderr
    assert "running in the background as 'config'" in twin.stdout
    assert run_lynx("stop", "-y", cwd=other, timeout=40).returncode == 0
    entry_file(other).write_text(json.dumps(entry))
    result = run_lynx("stop", "-y", cwd=other, timeout=40)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Terminating process" not in result.stdout
    assert scheduler.is_running() and scheduler.status() != psutil.STATUS_ZOMBIE
    assert run_lynx("stop", "-y", cwd=home, timeout=40).returncode == 0


def test_the_log_file_is_there_once_start_bg_says_the_scheduler_runs(lynx_dir: Path) -> None:
    """'lynx start -bg -lf x.log && tail -f x.log' must find the file (a FIFO is opened only later)."""
    marker_step(lynx_dir, "step.py")
    write_config(lynx_dir, "cron:\n  hour: 3\n  minute: 0\nsteps:\n  - script: step.py\n")

    started = run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", "x.log", cwd=lynx_dir)

    assert started.returncode == 0, started.stdout + started.stderr
    assert (lynx_dir / "x.log").is_file()
    assert run_lynx("stop", "-y", cwd=lynx_dir).returncode == 0
