"""Surviving crashes and reboots (issue 15), end to end: missed runs caught up, lost runs recorded,
schedulers restored, the boot service written for this directory."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import (
    clean_env,
    is_gone,
    lynx_command,
    marker_step,
    ran,
    run_lynx,
    wait_for,
    write_config,
    write_script,
)


def history(directory: Path) -> list[dict[str, Any]]:
    result = run_lynx("history", "--json", "-n", "0", cwd=directory)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_schedule_until(directory: Path, config: str, count: int) -> str:
    """``lynx start -ni`` of ``config`` until ``count`` runs are in ran.txt, then Ctrl+C; its output."""
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", config], cwd=directory, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: len(ran(directory)) >= count, timeout=60)
        lynx.send_signal(signal.SIGINT)
        output, _ = lynx.communicate(timeout=60)
    finally:
        if lynx.poll() is None:
            lynx.kill()
            lynx.communicate()
    return output


CATCHUP = """
    cron:
      second: '*/3'
      catchup: {catchup}
    steps:
      - script: step.py
    """


@pytest.mark.parametrize("catchup", ["true", "60"])
def test_a_fire_missed_while_lynx_was_down_runs_once_at_start(tmp_path: Path, catchup: str) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, CATCHUP.format(catchup=catchup))
    run_schedule_until(tmp_path, "config.yaml", 1)
    last = datetime.fromisoformat(history(tmp_path)[0]["started_at"])
    # Down across at least one fire ('*/3'), then up again.
    wait_for(lambda: (datetime.now(last.tzinfo) - last).total_seconds() > 6.5, timeout=20)
    started = time.monotonic()

    output = run_schedule_until(tmp_path, "config.yaml", 2)

    assert "Catching up the run missed at " in output
    assert "Lynx is scheduled: first run now (catching up), then at " in output
    # The catch-up run came at once, not at the next fire.
    second = datetime.fromisoformat(history(tmp_path)[0]["started_at"])
    assert (second - last).total_seconds() > 6
    assert time.monotonic() - started < 30


def test_without_catchup_or_with_a_fire_older_than_it_nothing_is_caught_up(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, CATCHUP.format(catchup="1"))
    run_schedule_until(tmp_path, "config.yaml", 1)
    last = datetime.fromisoformat(history(tmp_path)[0]["started_at"])
    # Fires were missed, the newest of them 1.4-2 s ago ('*/3' fires when the seconds divide by 3): too
    # old for 'catchup: 1' when Lynx looks, a few tenths of a second later, and before the next fire.
    wait_for(
        lambda: (datetime.now(last.tzinfo) - last).total_seconds() > 7 and 1.4 < time.time() % 3 < 2.0,
        timeout=20,
        interval=0.01,
    )

    output = run_schedule_until(tmp_path, "config.yaml", 2)

    assert "Catching up" not in output
    assert "Lynx is scheduled: first run at " in output


def test_a_bad_catchup_is_refused(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, CATCHUP.format(catchup="soon"))

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith("Error: config.yaml: cron: 'catchup' must be true, false or a number of seconds")


def step_that_waits(directory: Path, name: str = "wait.py") -> Path:
    """A step that writes its PID to <name>.pid, then waits a minute."""
    return write_script(
        directory,
        name,
        f"""
        import os, time
        with open({str(directory / (name + ".pid"))!r}, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(60)
        """,
    )


def test_a_one_shot_lynx_killed_mid_step_leaves_a_lost_run_in_the_history(lynx_dir: Path) -> None:
    tmp_path = lynx_dir
    marker_step(tmp_path, "first.py")
    step_that_waits(tmp_path)
    write_config(tmp_path, "steps:\n  - script: first.py\n  - script: wait.py\n    name: train\n")
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", "config.yaml"], cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    try:
        step = int(wait_for(lambda: (tmp_path / "wait.py.pid").exists() and (tmp_path / "wait.py.pid").read_text()))
        step_process = psutil.Process(step)
        killed_at = datetime.now().astimezone()
        lynx.kill()
        lynx.wait(timeout=30)
    finally:
        if lynx.poll() is None:
            lynx.kill()
    # Lynx's watchdog ends the step it left (SIGTERM: the step dies at once).
    assert wait_for(lambda: is_gone(step, step_process.create_time()), timeout=10)

    shown = run_lynx("history", "-n", "1", cwd=tmp_path)

    assert shown.returncode == 0
    assert "lost at step 2 (Lynx last known alive " in shown.stdout.splitlines()[0]
    (run,) = history(tmp_path)
    assert run["result"] == "lost" and run["failed_step"] == 2
    assert [step["result"] for step in run["steps"]] == ["ok", "lost"]
    assert abs((datetime.fromisoformat(run["last_alive_at"]) - killed_at).total_seconds()) < 31
    assert not list((tmp_path / ".lynx" / "running").iterdir())
    # Found once: another look adds nothing.
    assert len(history(tmp_path)) == 1


def scheduler_pid(directory: Path, name: str) -> int:
    return int(json.loads((directory / ".lynx" / "schedulers" / f"{name}.json").read_text())["pid"])


def test_a_background_scheduler_killed_mid_step_shows_its_run_lost(lynx_dir: Path) -> None:
    step_that_waits(lynx_dir)
    write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: wait.py\n", name="nightly.yaml")
    assert run_lynx("start", "-bg", "-cf", "nightly.yaml", "-lf", "n.log", cwd=lynx_dir).returncode == 0
    wait_for(lambda: (lynx_dir / "wait.py.pid").exists(), timeout=60)
    scheduler = scheduler_pid(lynx_dir, "nightly")

    os_kill(scheduler)

    status = run_lynx("status", cwd=lynx_dir)
    assert status.returncode == 1
    assert " dead " in status.stdout and "lost at step 1" in status.stdout
    assert "'lynx restore' starts again nightly" in status.stdout
    (run,) = history(lynx_dir)
    assert run["result"] == "lost" and run["name"] == "nightly" and run["failed_step"] == 1


def os_kill(pid: int) -> None:
    """SIGKILL ``pid`` (a process this test started) and wait until it is gone."""
    import os

    import psutil

    process = psutil.Process(pid)
    os.kill(pid, signal.SIGKILL)
    psutil.wait_procs([process], timeout=30)


SCHEDULE = (
    "vars: {{word: plain}}\ncron:\n  second: '*/2'\nsteps:\n"
    "  - script: record.py\n    arguments: ['{tag} ${{vars.word}}']\n"
)


def test_after_a_reboot_restore_brings_back_each_scheduler_with_its_options(lynx_dir: Path) -> None:
    write_script(
        lynx_dir,
        "record.py",
        f"""
        import sys
        with open({str(lynx_dir / "ran.txt")!r}, "a") as handle:
            handle.write(" ".join(sys.argv[1:]) + "\\n")
        """,
    )
    write_config(lynx_dir, SCHEDULE.format(tag="one"), name="one.yaml")
    write_config(lynx_dir, SCHEDULE.format(tag="two"), name="two.yaml")
    assert (
        run_lynx("start", "-bg", "-cf", "one.yaml", "-lf", "one.log", "vars.word=changed", cwd=lynx_dir).returncode == 0
    )
    assert run_lynx("start", "-bg", "-cf", "two.yaml", "--name", "second", "-kr", cwd=lynx_dir).returncode == 0
    wait_for(lambda: {"one changed", "two plain"} <= set(ran(lynx_dir)), timeout=60)
    # The "reboot": every scheduler and step killed at once.
    for name in ("one", "second"):
        os_kill(scheduler_pid(lynx_dir, name))
    (lynx_dir / "ran.txt").unlink()
    before = run_lynx("status", cwd=lynx_dir)
    assert before.returncode == 1 and "'lynx restore' starts again one, second" in before.stdout

    restored = run_lynx("restore", "--all", cwd=lynx_dir)

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "Restored 'one' (PID " in restored.stdout and "Restored 'second' (PID " in restored.stdout
    status = json.loads(run_lynx("status", "--json", cwd=lynx_dir).stdout)
    assert sorted(row["state"] for row in status) in (
        ["waiting", "waiting"],
        ["running", "waiting"],
        ["running", "running"],
    )
    assert {row["name"]: row["overrides"] for row in status} == {"one": ["vars.word=changed"], "second": []}
    # The next fire runs each with its options.
    wait_for(lambda: {"one changed", "two plain"} <= set(ran(lynx_dir)), timeout=60)
    again = run_lynx("restore", cwd=lynx_dir)
    assert again.returncode == 0 and "'one' is running" in again.stdout and "'second' is running" in again.stdout
    assert run_lynx("stop", "--all", "-y", cwd=lynx_dir).returncode == 0


def test_two_restores_at_once_start_each_scheduler_once(lynx_dir: Path) -> None:
    marker_step(lynx_dir, "step.py")
    write_config(lynx_dir, "cron:\n  hour: 3\n  minute: 0\nsteps:\n  - script: step.py\n", name="nightly.yaml")
    assert run_lynx("start", "-bg", "-cf", "nightly.yaml", cwd=lynx_dir).returncode == 0
    os_kill(scheduler_pid(lynx_dir, "nightly"))

    racing = [
        subprocess.Popen(
            [*lynx_command(), "restore"],
            cwd=lynx_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60)[0] for process in racing]

    assert [process.returncode for process in racing] == [0, 0]
    assert sum("Restored 'nightly'" in output for output in outputs) == 1, outputs
    schedulers = [process for process in psutil_children_in(lynx_dir) if "--detached" in " ".join(process.cmdline())]
    assert len(schedulers) == 1
    assert run_lynx("stop", "-y", cwd=lynx_dir).returncode == 0


def psutil_children_in(directory: Path) -> list[Any]:
    import psutil

    found = []
    for process in psutil.process_iter(["cwd"]):
        if process.info.get("cwd") == str(directory.resolve()):
            found.append(process)
    return found


def test_restore_skips_what_ended_was_stopped_or_lost_its_config(lynx_dir: Path) -> None:
    marker_step(lynx_dir, "step.py")
    marker_step(lynx_dir, "fail.py", exit_code=1)
    write_config(lynx_dir, "cron:\n  hour: 3\n  minute: 0\nsteps:\n  - script: step.py\n", name="gone.yaml")
    write_config(lynx_dir, "cron:\n  second: '*/1'\nsteps:\n  - script: fail.py\n", name="fails.yaml")
    write_config(lynx_dir, "cron:\n  hour: 3\n  minute: 0\nsteps:\n  - script: step.py\n", name="stopped.yaml")
    for config in ("gone.yaml", "fails.yaml", "stopped.yaml"):
        assert run_lynx("start", "-bg", "-cf", config, cwd=lynx_dir).returncode == 0
    # 'fails' ends by itself after its failed run (no -kr); 'stopped' is stopped; 'gone' dies and its config goes.
    wait_for(
        lambda: (
            '"ended"' in (lynx_dir / ".lynx" / "schedulers" / "fails.json").read_text()
            and json.loads((lynx_dir / ".lynx" / "schedulers" / "fails.json").read_text())["ended"]
        ),
        timeout=60,
    )
    assert run_lynx("stop", "-y", "stopped", cwd=lynx_dir).returncode == 0
    os_kill(scheduler_pid(lynx_dir, "gone"))
    (lynx_dir / "gone.yaml").unlink()

    result = run_lynx("restore", cwd=lynx_dir)

    assert result.returncode == 1
    assert "Error: cannot restore 'gone': its config file gone.yaml no longer exists" in result.stderr
    assert "'fails' ended by itself (run_failed): not restored." in result.stdout
    assert "stopped" not in result.stdout + result.stderr
    assert not psutil_children_in(lynx_dir) or all(
        "--detached" not in " ".join(process.cmdline()) for process in psutil_children_in(lynx_dir)
    )


def test_the_boot_service_for_this_directory(tmp_path: Path) -> None:
    import shutil

    home = tmp_path / "home"
    env = clean_env(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    project = tmp_path / "my project"
    project.mkdir()

    installed = run_lynx("service", "install", "--kind", "systemd", cwd=project, env=env)

    assert installed.returncode == 0, installed.stderr
    (unit,) = (home / ".config" / "systemd" / "user").glob("lynx-my_project-*.service")
    text = unit.read_text()
    lynx = lynx_command()[0]
    assert f"WorkingDirectory={project.resolve()}\n" in text
    assert (
        f"ExecStart={lynx} restore --all\n" in text
        if " " not in lynx
        else f'ExecStart="{lynx}" restore --all\n' in text
    )
    assert "WantedBy=default.target" in text
    assert f"systemctl --user daemon-reload && systemctl --user enable --now {unit.name}" in installed.stdout
    verify = shutil.which("systemd-analyze")
    if verify is not None:
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        checked = subprocess.run(
            [verify, "verify", "--user", str(unit)], capture_output=True, text=True, timeout=60,
            env={**env, "XDG_RUNTIME_DIR": str(runtime)},
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr
    removed = run_lynx("service", "remove", "--kind", "systemd", cwd=project, env=env)
    assert removed.returncode == 0 and not unit.exists()
    assert f"systemctl --user disable {unit.name}" in removed.stdout


def test_the_reboot_line_for_cron(tmp_path: Path) -> None:
    import shutil

    if shutil.which("crontab") is not None:
        pytest.skip("this machine has a crontab command: the line would go into a real crontab")
    project = tmp_path / "proj"
    project.mkdir()

    installed = run_lynx("service", "install", "--kind", "cron", cwd=project)

    assert installed.returncode == 0
    line = installed.stdout.splitlines()[-1]
    assert line == (
        f"@reboot cd {project.resolve()} && {lynx_command()[0]} restore --all >> "
        f"{project.resolve() / '.lynx' / 'restore.log'} 2>&1 # lynx restore of {project.resolve()}"
    )
