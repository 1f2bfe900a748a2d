"""Real cron firing at second granularity: runs, skipped fires, late fires, signals, Ctrl+C/Ctrl+D."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

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

EVERY_2_SECONDS = """
    cron:
      second: '*/2'
    steps:
      - script: {script}
"""


def schedule_config(directory: Path, script: str) -> Path:
    return write_config(directory, EVERY_2_SECONDS.format(script=script))


def read_pid(path: Path) -> tuple[int, float]:
    """The PID a step wrote to ``path`` and that process's create time (read while it is alive)."""
    pid = int(wait_for(lambda: path.exists() and path.read_text().strip(), timeout=20))
    return pid, psutil.Process(pid).create_time()


class Foreground:
    """``lynx args`` running in the foreground without a terminal, its output going to a file."""

    def __init__(self, directory: Path, args: tuple[str, ...], env: dict[str, str] | None) -> None:
        self.output_path = directory / "lynx-output.txt"
        self._handle = open(self.output_path, "wb")  # noqa: SIM115 - closed by the fixture
        self.popen = subprocess.Popen(
            [*lynx_command(), *args],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            env=env or clean_env(),
        )

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def wait_output(self, text: str, timeout: float = 20) -> None:
        wait_for(lambda: text in self.output(), timeout=timeout)

    def send(self, signum: int) -> None:
        os.kill(self.popen.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout=timeout)

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._handle.close()


@pytest.fixture
def foreground(tmp_path: Path) -> Iterator[Callable[..., Foreground]]:
    """Start ``lynx`` in tmp_path; it (and anything left in tmp_path) is killed after the test."""
    started: list[Foreground] = []

    def launch(*args: str, env: dict[str, str] | None = None) -> Foreground:
        lynx = Foreground(tmp_path, args, env)
        started.append(lynx)
        return lynx

    yield launch
    for lynx in started:
        lynx.close()
    kill_processes_in(tmp_path)


def test_runs_on_every_fire_until_ctrl_c(tmp_path: Path, foreground: Callable[..., Foreground]) -> None:
    marker_step(tmp_path, "step.py")
    config = schedule_config(tmp_path, "step.py")
    lynx = foreground("start", "-ni", "-cf", str(config))
    # Two whole runs, not just two started steps: Ctrl+C must not land inside the second one.
    wait_for(lambda: lynx.output().count("Step 1 (step.py) completed successfully.") >= 2, timeout=20)
    assert len(ran(tmp_path)) >= 2
    lynx.wait_output("Next run at ")
    assert lynx.popen.poll() is None
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130
    output = lynx.output()
    assert "Traceback" not in output
    assert re.search(r"Next run at \w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", output)
    assert "Lynx was interrupted (Ctrl+C) and has stopped." in output
    assert output.count("Step 1 (step.py) completed successfully.") >= 2


def test_sigterm_ends_the_schedule_with_143(tmp_path: Path, foreground: Callable[..., Foreground]) -> None:
    marker_step(tmp_path, "step.py")
    config = schedule_config(tmp_path, "step.py")
    lynx = foreground("start", "-ni", "-cf", str(config))
    lynx.wait_output("Next run at ")
    lynx.send(signal.SIGTERM)
    assert lynx.wait() == 143
    output = lynx.output()
    assert "Traceback" not in output
    assert "Lynx received SIGTERM and has stopped." in output
    assert len(ran(tmp_path)) >= 1


def test_failed_run_ends_the_schedule(tmp_path: Path) -> None:
    marker_step(tmp_path, "fail.py", exit_code=3)
    config = schedule_config(tmp_path, "fail.py")
    result = run_lynx("start", "-ni", "-cf", str(config), cwd=tmp_path, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert ran(tmp_path) == ["fail.py"]
    assert "Step 1 (fail.py) failed with exit code 3." in output
    assert "The run failed: ending the schedule." in output
    assert "Traceback" not in output


def test_keep_running_runs_a_failing_step_again(tmp_path: Path, foreground: Callable[..., Foreground]) -> None:
    marker_step(tmp_path, "fail.py", exit_code=3)
    config = schedule_config(tmp_path, "fail.py")
    lynx = foreground("start", "-ni", "--keep-running", "-cf", str(config))
    # Two whole failed runs, not just two started steps: Ctrl+C must not land inside the second one.
    wait_for(lambda: lynx.output().count("The run failed; --keep-running: next run at ") >= 2, timeout=20)
    assert len(ran(tmp_path)) >= 2
    assert lynx.popen.poll() is None, lynx.output()
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130
    output = lynx.output()
    assert output.count("Step 1 (fail.py) failed with exit code 3.") >= 2
    assert "Traceback" not in output


def test_fires_during_a_run_are_skipped_and_runs_never_overlap(
    tmp_path: Path, foreground: Callable[..., Foreground]
) -> None:
    times = tmp_path / "times.txt"
    lock = tmp_path / "running.lock"
    write_script(
        tmp_path,
        "slow.py",
        f"""
        import os, signal, time
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a forwarded Ctrl+C ends it quietly
        with open({str(times)!r}, "a") as handle:
            handle.write(f"start {{time.time()}}\\n")
        try:
            os.close(os.open({str(lock)!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            with open({str(times)!r}, "a") as handle:
                handle.write("overlap\\n")
        time.sleep(5)
        os.unlink({str(lock)!r})
        with open({str(times)!r}, "a") as handle:
            handle.write(f"end {{time.time()}}\\n")
        """,
    )
    config = schedule_config(tmp_path, "slow.py")
    lynx = foreground("start", "-ni", "-cf", str(config))

    def lines() -> list[str]:
        return times.read_text().splitlines() if times.exists() else []

    wait_for(lambda: sum(line.startswith("start") for line in lines()) >= 2, timeout=30)
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130
    output = lynx.output()
    assert "Skipped the run scheduled at" in output
    assert "the previous run is still going" in output
    assert "Traceback" not in output
    recorded = lines()
    assert "overlap" not in recorded
    # Each run ends before the next one starts: start, end, start, ...
    kinds = [line.split()[0] for line in recorded]
    assert kinds[:3] == ["start", "end", "start"], recorded
    stamps = [float(line.split()[1]) for line in recorded[:3]]
    assert stamps[0] <= stamps[1] <= stamps[2]


def test_ctrl_c_during_a_scheduled_run_ends_the_step(tmp_path: Path) -> None:
    pid_file = tmp_path / "step.pid"
    write_script(
        tmp_path,
        "hang.py",
        f"""
        import os, signal, time
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a forwarded Ctrl+C ends it quietly
        with open({str(pid_file)!r}, "w") as handle:
            handle.write(str(os.getpid()))
        print("step started", flush=True)
        time.sleep(60)
        """,
    )
    config = schedule_config(tmp_path, "hang.py")
    child = pexpect.spawn(
        lynx_command()[0],
        [*lynx_command()[1:], "start", "-ni", "-cf", str(config)],
        cwd=str(tmp_path),
        env=clean_env(),
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect("step started")
        pid, created = read_pid(pid_file)
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        output = child.before
        assert child.exitstatus == 130, output
        assert "Traceback" not in output
        assert "interrupted (Ctrl+C)" in output
        assert is_gone(pid, created)
    finally:
        child.close(force=True)
        kill_processes_in(tmp_path)


def test_interactive_mode_with_a_cron_section_runs_once(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    config = schedule_config(tmp_path, "step.py")
    result = run_lynx("start", "-cf", str(config), cwd=tmp_path, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert ran(tmp_path) == ["step.py"]
    assert "interactive mode runs the pipeline once" in output
    assert "Next run at" not in output
    assert "Traceback" not in output


def test_ctrl_d_on_a_terminal_ends_the_schedule(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    config = schedule_config(tmp_path, "step.py")
    child = pexpect.spawn(
        lynx_command()[0],
        [*lynx_command()[1:], "start", "-ni", "-cf", str(config)],
        cwd=str(tmp_path),
        env=clean_env(),
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect("Next run at ")
        child.sendeof()
        child.expect("End of input")
        child.expect(pexpect.EOF)
        child.close()
        output = child.before
        assert child.exitstatus == 0, output
        assert "The schedule has ended." in output
        assert "Traceback" not in output
    finally:
        child.close(force=True)
        kill_processes_in(tmp_path)


def test_a_late_fire_still_runs(tmp_path: Path, foreground: Callable[..., Foreground]) -> None:
    """A fire missed by 3 s (Lynx suspended) runs late, within the misfire grace, instead of never.

    The schedule fires once a minute, so a fire dropped as missed would not be made up for by
    the next one within this test's wait.
    """
    started = tmp_path / "started.txt"
    marker_step(
        tmp_path,
        "step.py",
        extra=f"import time; open({str(started)!r}, 'a').write(f'{{time.time()}}\\n')",
    )
    fire_second = (datetime.now(timezone.utc).second + 6) % 60
    config = write_config(
        tmp_path,
        f"""
        cron:
          second: '{fire_second}'
          timezone: UTC
        steps:
          - script: step.py
        """,
    )
    lynx = foreground("start", "-ni", "-cf", str(config))
    found = wait_for(
        lambda: re.search(r"first run at \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", lynx.output()), timeout=20
    )
    assert isinstance(found, re.Match)
    fire = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    assert fire - time.time() > 0.5, "Lynx took too long to start: the fire time is already here"
    lynx.send(signal.SIGSTOP)
    try:
        while time.time() < fire + 3:  # suspended past the fire time
            time.sleep(0.1)
        assert ran(tmp_path) == []
    finally:
        lynx.send(signal.SIGCONT)
    wait_for(lambda: ran(tmp_path), timeout=20)
    assert float(started.read_text().split()[0]) >= fire + 2.5
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130
    output = lynx.output()
    assert "Missed the run" not in output
    assert "Traceback" not in output


def test_cron_timezone_utc(tmp_path: Path, foreground: Callable[..., Foreground]) -> None:
    """The hours are UTC hours even where local time is 9 hours ahead (TZ=Asia/Tokyo)."""
    marker_step(tmp_path, "step.py")
    hour = datetime.now(timezone.utc).hour
    config = write_config(
        tmp_path,
        f"""
        cron:
          hour: '{hour},{(hour + 1) % 24}'
          second: '*/2'
          timezone: UTC
        steps:
          - script: step.py
        """,
    )
    lynx = foreground("start", "-ni", "-cf", str(config), env=clean_env(TZ="Asia/Tokyo"))
    wait_for(lambda: ran(tmp_path), timeout=20)
    lynx.wait_output("Next run at ")
    assert re.search(r"Next run at \w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lynx.output())
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130
    assert "Traceback" not in lynx.output()


# --- regressions from review -------------------------------------------------------------------


def drain_until(child: pexpect.spawn, condition: Callable[[], object], timeout: float) -> None:
    """Keep reading the terminal (so nothing writing to it can block) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {condition}")
        with contextlib.suppress(pexpect.TIMEOUT):
            child.read_nonblocking(65536, timeout=0.2)


def test_a_schedule_started_as_a_background_job_of_a_shell_keeps_running(tmp_path: Path) -> None:
    """``lynx start -ni &`` in an interactive shell must not read the terminal and be stopped (SIGTTIN)."""
    marker_step(tmp_path, "step.py")
    schedule_config(tmp_path, "step.py")
    shell = pexpect.spawn(
        "bash",
        ["--norc", "--noprofile", "-i"],
        cwd=str(tmp_path),
        env=clean_env(PS1="$ "),
        encoding="utf-8",
        timeout=20,
    )
    try:
        shell.sendline(f"{shlex.join(lynx_command())} start -ni -cf config.yaml &")
        shell.sendline("echo LYNX_PID=$!")
        shell.expect(r"LYNX_PID=(\d+)")
        lynx = psutil.Process(int(shell.match.group(1)))
        assert "start" in lynx.cmdline()

        def fired_three_times() -> bool:
            assert lynx.status() != psutil.STATUS_STOPPED, "the background Lynx was stopped by job control"
            return len(ran(tmp_path)) >= 3

        drain_until(shell, fired_three_times, timeout=30)
        assert lynx.is_running() and lynx.status() != psutil.STATUS_STOPPED
        lynx.terminate()
        drain_until(shell, lambda: is_gone(lynx.pid, lynx.create_time()), timeout=30)
        assert "Traceback" not in shell.before
    finally:
        shell.close(force=True)
        kill_processes_in(tmp_path)


def test_a_second_ctrl_c_does_not_cut_short_the_end_of_a_step_that_ignores_sigterm(
    tmp_path: Path, foreground: Callable[..., Foreground]
) -> None:
    pid_file = tmp_path / "stubborn.pid"
    write_script(
        tmp_path,
        "stubborn.py",
        f"""
        import os, signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is forwarded as SIGINT first
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open({str(pid_file)!r} + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
        print("ignoring SIGTERM", flush=True)
        time.sleep(120)
        """,
    )
    config = schedule_config(tmp_path, "stubborn.py")
    lynx = foreground("start", "-ni", "-cf", str(config))
    pid, created = read_pid(pid_file)
    lynx.wait_output("ignoring SIGTERM")
    lynx.send(signal.SIGINT)
    lynx.wait_output("ending it")
    time.sleep(1)  # the user presses Ctrl+C again while Lynx waits for the step
    lynx.send(signal.SIGINT)
    try:
        code = lynx.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Lynx hung after the second Ctrl+C:\n{lynx.output()[-3000:]}")
    output = lynx.output()
    assert code == 130, output
    wait_for(lambda: is_gone(pid, created), timeout=10)
    assert "SIGKILL" in output
    assert "Traceback" not in output


def test_a_schedule_whose_end_date_passes_ends_by_itself(tmp_path: Path, foreground: Callable[..., Foreground]) -> None:
    marker_step(tmp_path, "step.py")
    end = datetime.now(timezone.utc) + timedelta(seconds=5)
    config = write_config(
        tmp_path,
        f"""
        cron:
          second: '*/1'
          end_date: '{end.strftime("%Y-%m-%d %H:%M:%S")}'
          timezone: UTC
        steps:
          - script: step.py
        """,
    )
    lynx = foreground("start", "-ni", "-cf", str(config))
    try:
        code = lynx.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Lynx idled on after the end_date:\n{lynx.output()[-3000:]}")
    output = lynx.output()
    assert code == 0, output
    assert len(ran(tmp_path)) >= 1
    assert "The schedule has ended." in output
    assert "Traceback" not in output


# --- crontab lines, run_on_start, DST, time zones (issue 10, issue 7 #18-#19) ------------------------


def load_schedule(directory: Path, cron: str) -> object:
    """The trigger of a config whose cron section is ``cron`` (YAML flow mapping)."""
    from lynx.config import load_pipeline

    marker_step(directory, "step.py")
    pipeline = load_pipeline(
        write_config(directory, f"cron: {cron}\nsteps:\n  - script: step.py\n"), cwd=str(directory)
    )
    assert pipeline.schedule is not None
    return pipeline.schedule.trigger()


def fire_times(trigger: object, start: datetime, count: int) -> list[datetime]:
    times: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
        assert fire is not None
        times.append(fire)
        previous = now = fire
    return times


# 2024-01-01 is a Monday; crontab numbers the days from Sunday = 0 (and 7).
MONDAY = datetime(2024, 1, 1, 0, 0, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("day_of_week", "weekdays"),
    [
        ("0", ["Sun"]),
        ("7", ["Sun"]),
        ("1", ["Mon"]),
        ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("sun", ["Sun"]),
        ("SAT,sun", ["Sat", "Sun"]),
        ("sun-thu", ["Sun", "Mon", "Tue", "Wed", "Thu"]),
        ("mon-sun", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
        ("5-7", ["Fri", "Sat", "Sun"]),
        ("*/2", ["Sun", "Tue", "Thu", "Sat"]),
        ("1-5/2", ["Mon", "Wed", "Fri"]),
    ],
)
def test_crontab_day_of_week_numbers_mean_what_they_mean_in_crontab(
    tmp_path: Path, day_of_week: str, weekdays: list[str]
) -> None:
    trigger = load_schedule(tmp_path, f"{{crontab: '0 12 * * {day_of_week}', timezone: UTC}}")

    fires = fire_times(trigger, MONDAY, 14)

    assert {fire.strftime("%a") for fire in fires} == set(weekdays)
    assert all((fire.hour, fire.minute, fire.second) == (12, 0, 0) for fire in fires)
    # Every matching day of two weeks, each once, in order.
    assert len({fire.date() for fire in fires}) == 14
    assert fires == sorted(fires)


def test_a_crontab_with_both_day_fields_restricted_fires_when_either_matches(tmp_path: Path) -> None:
    # crontab: the 13th of the month, and every Friday.
    trigger = load_schedule(tmp_path, "{crontab: '0 0 13 * 5', timezone: UTC}")

    fires = fire_times(trigger, MONDAY, 6)

    assert [fire.strftime("%a %d") for fire in fires] == ["Fri 05", "Fri 12", "Sat 13", "Fri 19", "Fri 26", "Fri 02"]


def test_a_six_field_crontab_has_seconds_first(tmp_path: Path) -> None:
    trigger = load_schedule(tmp_path, "{crontab: '*/20 30 9 * * mon-fri', timezone: UTC}")

    fires = fire_times(trigger, MONDAY, 4)

    assert [fire.strftime("%a %H:%M:%S") for fire in fires] == [
        "Mon 09:30:00",
        "Mon 09:30:20",
        "Mon 09:30:40",
        "Tue 09:30:00",
    ]


def test_a_six_field_crontab_fires_on_the_right_seconds(tmp_path: Path, foreground: Callable[..., Foreground]) -> None:
    marker_step(tmp_path, "step.py")
    config = write_config(tmp_path, "cron:\n  crontab: '*/3 * * * * *'\nsteps:\n  - script: step.py\n")
    lynx = foreground("start", "-ni", "-cf", str(config))
    wait_for(lambda: lynx.output().count("Next run at ") >= 2, timeout=30)
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130
    output = lynx.output()
    seconds = [int(s) for s in re.findall(r"(?:first run at|Next run at) \w{3} [\d-]+ \d\d:\d\d:(\d\d)", output)]
    assert len(seconds) >= 3, output
    assert all(second % 3 == 0 for second in seconds), output
    assert len(ran(tmp_path)) >= 2


def test_run_on_start_runs_before_the_first_fire(tmp_path: Path, foreground: Callable[..., Foreground]) -> None:
    marker_step(tmp_path, "step.py")
    # The first fire is months away: only run_on_start can make the step run now.
    config = write_config(
        tmp_path, "cron:\n  crontab: '0 0 1 1 *'\n  timezone: UTC\n  run_on_start: true\nsteps:\n  - script: step.py\n"
    )
    lynx = foreground("start", "-ni", "-cf", str(config))
    wait_for(lambda: ran(tmp_path) == ["step.py"], timeout=30)
    lynx.wait_output("Next run at ")
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130
    output = lynx.output()
    next_new_year = datetime(datetime.now(timezone.utc).year + 1, 1, 1, tzinfo=timezone.utc)
    expected = next_new_year.strftime("%a %Y-%m-%d 00:00:00 UTC")
    assert f"Lynx is scheduled: first run now (run_on_start), then at {expected}." in output
    assert f"Next run at {expected}." in output


def test_a_daily_time_in_the_hour_repeated_when_clocks_go_back_fires_once(tmp_path: Path) -> None:
    berlin = "Europe/Berlin"
    trigger = load_schedule(tmp_path, f"{{hour: 2, minute: 30, timezone: {berlin}}}")

    fires = fire_times(trigger, datetime(2026, 10, 24, 12, tzinfo=timezone.utc), 3)

    # 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice; cron runs the job once.
    assert [fire.astimezone(timezone.utc).strftime("%m-%d %H:%M") for fire in fires] == [
        "10-25 00:30",  # 02:30 CEST
        "10-26 01:30",  # 02:30 CET, the next day
        "10-27 01:30",
    ]


def test_a_schedule_with_any_hour_fires_in_both_passes_of_the_repeated_hour(tmp_path: Path) -> None:
    trigger = load_schedule(tmp_path, "{minute: '*/30', timezone: Europe/Berlin}")

    fires = fire_times(trigger, datetime(2026, 10, 24, 23, 45, tzinfo=timezone.utc), 5)

    # Every 30 minutes of real time: 02:00 and 02:30 CEST, then 02:00 and 02:30 CET.
    assert [fire.astimezone(timezone.utc).strftime("%H:%M") for fire in fires] == [
        "00:00",
        "00:30",
        "01:00",
        "01:30",
        "02:00",
    ]


@pytest.mark.parametrize("hour", ["'*/1'", "'*/2'"])
def test_an_hour_starting_with_a_star_fires_in_both_passes_as_in_cron(tmp_path: Path, hour: str) -> None:
    """cron treats an hour field starting with '*' as wild: '*/1' is every hour, in both passes too."""
    trigger = load_schedule(tmp_path, f"{{hour: {hour}, minute: 30, timezone: Europe/Berlin}}")

    fires = fire_times(trigger, datetime(2026, 10, 25, 0, 0, tzinfo=timezone.utc), 2)

    # 02:30 CEST (00:30 UTC), then 02:30 CET (01:30 UTC) one real hour later.
    assert [fire.astimezone(timezone.utc).strftime("%H:%M") for fire in fires] == ["00:30", "01:30"]


def test_a_time_in_the_hour_skipped_when_clocks_go_forward_runs_an_hour_later(tmp_path: Path) -> None:
    from lynx.cron import describe

    trigger = load_schedule(tmp_path, "{hour: 2, minute: 30, timezone: Europe/Berlin}")

    fires = fire_times(trigger, datetime(2026, 3, 28, 12, tzinfo=timezone.utc), 2)

    assert [describe(fire) for fire in fires] == ["Sun 2026-03-29 03:30:00 CEST", "Mon 2026-03-30 02:30:00 CEST"]


@pytest.mark.parametrize(("tz", "zone"), [("UTC0", "UTC"), ("JST-9", "JST")])
def test_a_posix_tz_schedules_with_its_offset(tmp_path: Path, tz: str, zone: str) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, "cron:\n  crontab: '0 0 1 1 *'\nsteps:\n  - script: step.py\n")
    env = clean_env(TZ=tz)

    once = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path, env=env)
    assert once.returncode == 0, once.stdout + once.stderr
    assert ran(tmp_path) == ["step.py"]

    process = subprocess.Popen(
        [*lynx_command(), "start", "-cf", "config.yaml", "-ni"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert re.search(rf"first run at \w{{3}} \d{{4}}-01-01 00:00:00 {zone}\.", line), line
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def test_a_posix_tz_with_dst_rules_runs_once_and_names_the_fix_for_a_schedule(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, "cron:\n  second: '*/2'\nsteps:\n  - script: step.py\n")
    env = clean_env(TZ="CET-1CEST,M3.5.0,M10.5.0/3")

    once = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path, env=env)
    assert once.returncode == 0, once.stdout + once.stderr
    assert ran(tmp_path) == ["step.py"]

    scheduled = run_lynx("start", "-cf", "config.yaml", "-ni", cwd=tmp_path, env=env, timeout=30)
    assert scheduled.returncode == 2
    assert scheduled.stderr.strip().splitlines() == [
        "Error: cron: the local time zone cannot be told from TZ='CET-1CEST,M3.5.0,M10.5.0/3': set 'timezone:' "
        "in the cron section (a zone name such as Europe/Berlin, or UTC)"
    ]
    assert "\\n" not in scheduled.stderr


BAD_SCHEDULES = {
    "negative-jitter": ("{second: '*/2', jitter: -5}", ["'jitter'", "at least 0"]),
    "text-jitter": ("{second: '*/2', jitter: soon}", ["'jitter'"]),
    "february-31": ("{day: 31, month: 2}", ["never fires", "day: 31, month: 2"]),
    "crontab-four-fields": ("{crontab: '* * * *'}", ["crontab", "5 fields", "not 4"]),
    "crontab-bad-weekday": ("{crontab: '0 0 * * 8'}", ["crontab", "'8'", "0 and 7 being Sunday"]),
    "crontab-backwards": ("{crontab: '0 0 * * 5-1'}", ["crontab", "backwards"]),
    "crontab-bad-minute": ("{crontab: '61 * * * *'}", ["crontab", "minute"]),
    "crontab-with-hour": ("{crontab: '* * * * *', hour: 3}", ["'hour' cannot stand beside 'crontab'"]),
    "crontab-not-text": ("{crontab: [1, 2]}", ["'crontab'", "list"]),
    "crontab-reboot": ("{crontab: '@reboot'}", ["run_on_start"]),
    "misfire-zero": ("{second: '*/2', misfire_grace_time: 0}", ["'misfire_grace_time'"]),
    "coalesce-text": ("{second: '*/2', coalesce: sometimes}", ["'coalesce'", "true or false"]),
    "run-on-start-number": ("{second: '*/2', run_on_start: 1}", ["'run_on_start'"]),
    "only-options": ("{run_on_start: true}", ["crontab"]),
}


@pytest.mark.parametrize("name", list(BAD_SCHEDULES))
def test_a_bad_schedule_is_refused_at_once(tmp_path: Path, name: str) -> None:
    cron, words = BAD_SCHEDULES[name]
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, f"cron: {cron}\nsteps:\n  - script: step.py\n")

    try:
        result = run_lynx("start", "-cf", "config.yaml", "-ni", cwd=tmp_path, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("Lynx did not refuse the schedule at once")

    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: config.yaml: cron"), result.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert ran(tmp_path) == []


def test_interpolation_works_in_cron(tmp_path: Path) -> None:
    trigger = load_schedule(tmp_path, "{crontab: '${vars.when}', timezone: UTC}\nvars:\n  when: '0 6 * * 0'")

    fires = fire_times(trigger, MONDAY, 2)

    assert [fire.strftime("%a %H:%M") for fire in fires] == ["Sun 06:00", "Sun 06:00"]


# --- a wall clock stepped back (issue 14.9) ---------------------------------------------------------


def libfaketime() -> str:
    """The libfaketime library (Debian's package faketime); skip without it (fail with LYNX_REQUIRE_SLURM=1, as CI)."""
    for pattern in (
        "/usr/lib/*/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    reason = "libfaketime is not installed (Debian: apt-get install faketime; .ci/run installs it)"
    if os.environ.get("LYNX_REQUIRE_SLURM") == "1":
        pytest.fail(f"LYNX_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def faked_clock(directory: Path) -> tuple[dict[str, str], Callable[[int], None]]:
    """An environment whose wall clock (not the monotonic one) follows an offset, and a function that sets
    the offset in seconds: Lynx and its steps see the clock stepped; the machine's clock is left alone."""
    offset = directory / "faketime.txt"
    offset.write_text("+0\n")
    env = clean_env(
        LD_PRELOAD=libfaketime(),
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    return env, lambda seconds: offset.write_text(f"{seconds:+d}\n")


def test_a_schedule_goes_on_by_the_new_time_when_the_clock_is_stepped_back(
    tmp_path: Path, foreground: Callable[..., Foreground]
) -> None:
    """cron's rule for a wildcard schedule: after a 10-minute step back the next fire is by the new
    time, not 10 minutes later; the step is logged once."""
    env, step_clock = faked_clock(tmp_path)
    marker_step(tmp_path, "step.py")
    config = schedule_config(tmp_path, "step.py")
    lynx = foreground("start", "-ni", "-cf", str(config), env=env)
    lynx.wait_output("Next run at ")
    runs = len(ran(tmp_path))

    step_clock(-600)

    # Without the fix the next run came 600 s later.
    wait_for(lambda: len(ran(tmp_path)) >= runs + 3, timeout=30)
    output = lynx.output()
    assert re.search(r"The clock went back by (599\.9|600|600\.1) s: next run at \w{3} \d{4}-", output), output
    assert output.count("The clock went back") == 1
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130
    assert "Traceback" not in lynx.output()


def test_a_schedule_with_a_fixed_hour_keeps_its_next_run_when_the_clock_is_stepped_back(
    tmp_path: Path, foreground: Callable[..., Foreground]
) -> None:
    """A fixed time already run is not run again by the clock going back (as cron, and as across DST):
    the step is noticed when the wait for the next fire ends, and the next run stays where it was."""
    env, step_clock = faked_clock(tmp_path)
    marker_step(tmp_path, "step.py")
    fire = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=10)
    config = write_config(
        tmp_path,
        f"""
        cron: {{hour: {fire.hour}, minute: {fire.minute}, second: {fire.second}, timezone: UTC}}
        steps:
          - script: step.py
        """,
    )
    lynx = foreground("start", "-ni", "-cf", str(config), env=env)
    lynx.wait_output("Lynx is scheduled: first run at ")
    step_clock(-600)
    assert fire.timestamp() - time.time() > 0.5, "Lynx took too long to start: the fire time is already here"

    lynx.wait_output("The clock went back by ", timeout=40)
    stays = f"the next run stays at {fire:%a %Y-%m-%d %H:%M:%S} UTC (a schedule with a fixed hour runs each"
    assert stays in lynx.output()
    assert ran(tmp_path) == []
    lynx.send(signal.SIGINT)
    assert lynx.wait() == 130


def test_the_clock_watch_tells_a_step_back_from_a_pause() -> None:
    """A step back is a shrinking distance between the wall and the monotonic clock; both clocks moving
    on together (a suspended process, a slow machine) or the wall clock stepping forward are not."""
    from lynx.schedule import WallClockWatch

    clocks = {"wall": 1000.0, "monotonic": 5.0}
    watch = WallClockWatch(wall=lambda: clocks["wall"], monotonic=lambda: clocks["monotonic"])
    clocks["wall"] += 30
    clocks["monotonic"] += 30
    assert watch.went_back() == 0.0
    clocks["wall"] += 3600
    assert watch.went_back() == 0.0
    clocks["wall"] -= 600.5
    assert watch.went_back() == pytest.approx(600.5)
    assert watch.went_back() == 0.0  # told once
    clocks["wall"] -= 0.2  # NTP-sized: not a step
    assert watch.went_back() == 0.0
