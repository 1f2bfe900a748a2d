"""The state folder ``.lynx/`` when someone else controls it or planted things in it: links, FIFOs,
devices, huge or damaged files, foreign owners, and the modes new files get (issue 14, items 4-6)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config

SCHEDULERS = Path(".lynx") / "schedulers"
NOBODY = 65534
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another user")


def one_error_line(result: Any) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    return errors[0]


def scheduled_config(directory: Path) -> Path:
    marker_step(directory, "step.py")
    return write_config(directory, "cron:\n  second: '*/2'\nsteps:\n  - script: step.py\n")


def start_background(directory: Path, *extra: str) -> Any:
    return run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", "x.log", *extra, cwd=directory, timeout=30)


def live_entry(directory: Path, name: str) -> dict[str, Any]:
    return json.loads((directory / SCHEDULERS / f"{name}.json").read_text())


# --- item 4: a .lynx/ someone else controls, and what may be planted in one ------------------------


@ROOT_ONLY
def test_a_state_folder_owned_by_another_user_is_refused(lynx_dir: Path) -> None:
    """Reading commands and a background start: one Error line (exit 1); a foreground run goes on without
    its history, saying so once; nothing in the folder is read or written."""
    scheduled_config(lynx_dir)
    once = write_config(lynx_dir, "steps:\n  - script: step.py\n", name="once.yaml")
    folder = lynx_dir / ".lynx"
    (folder / "schedulers").mkdir(parents=True)
    planted = {"name": "x", "pid": 1, "cmdline": ["/sbin/init"]}
    (folder / "schedulers" / "x.json").write_text(json.dumps(planted))
    (folder / "runs.jsonl").write_text("")
    for path in (folder, folder / "schedulers", folder / "schedulers" / "x.json", folder / "runs.jsonl"):
        os.chown(path, NOBODY, NOBODY)
    refusal = f"{folder} belongs to user nobody, not to you or root"

    for command in (["status"], ["status", "--json"], ["logs"], ["history"], ["stop", "-y"], ["stop", "x", "-y"]):
        result = run_lynx(*command, cwd=lynx_dir)
        assert result.returncode == 1, (command, result.stdout + result.stderr)
        assert refusal in one_error_line(result), command
    background = start_background(lynx_dir)
    assert background.returncode == 1, background.stdout + background.stderr
    assert refusal in one_error_line(background)
    assert "running in the background" not in background.stdout

    foreground = run_lynx("start", "-ni", "-cf", str(once), cwd=lynx_dir)
    assert foreground.returncode == 0, foreground.stdout + foreground.stderr
    assert ran(lynx_dir) == ["step.py"]
    assert "Cannot write the run history to .lynx/runs.jsonl (.lynx belongs to user nobody" in foreground.stdout
    assert (folder / "runs.jsonl").read_text() == ""
    assert sorted(os.listdir(folder)) == ["runs.jsonl", "schedulers"]
    assert sorted(os.listdir(folder / "schedulers")) == ["x.json"]


@ROOT_ONLY
def test_a_shared_group_state_folder_is_used(lynx_dir: Path) -> None:
    """A setgid, group-writable .lynx/ of a group you are in (a colleague's, set up for sharing) is trusted."""
    scheduled_config(lynx_dir)
    once = write_config(lynx_dir, "steps:\n  - script: step.py\n", name="once.yaml")
    folder = lynx_dir / ".lynx"
    folder.mkdir()
    os.chown(folder, NOBODY, os.getegid())
    folder.chmod(0o2775)
    assert run_lynx("start", "-ni", "-cf", str(once), cwd=lynx_dir).returncode == 0
    assert len(json.loads(run_lynx("history", "--json", cwd=lynx_dir).stdout)) == 1
    assert run_lynx("status", cwd=lynx_dir).returncode == 1  # none recorded: no refusal either


def test_a_symlinked_history_file_is_not_written_through(lynx_dir: Path) -> None:
    """A .lynx/runs.jsonl planted as a link: Lynx appends to no file it points to, not even a new one."""
    marker_step(lynx_dir, "step.py")
    config = write_config(lynx_dir, "steps:\n  - script: step.py\n")
    (lynx_dir / ".lynx").mkdir()
    victim = lynx_dir / "victim.txt"
    victim.write_text("precious\n")
    for target in (victim, lynx_dir / "created.txt"):
        link = lynx_dir / ".lynx" / "runs.jsonl"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        result = run_lynx("start", "-ni", "-cf", str(config), cwd=lynx_dir)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Cannot write the run history to .lynx/runs.jsonl (it is a symbolic link" in result.stdout
    assert victim.read_text() == "precious\n"
    assert not (lynx_dir / "created.txt").exists()
    assert ran(lynx_dir) == ["step.py", "step.py"]
    history = run_lynx("history", cwd=lynx_dir)
    assert history.returncode == 1
    assert "cannot read the run history .lynx/runs.jsonl: it is a symbolic link" in one_error_line(history)


def test_fifos_devices_links_and_huge_files_as_records_never_hang_or_crash(lynx_dir: Path) -> None:
    """A FIFO as a record hung status, stop and start -bg (holding the directory's lock); /dev/zero ended
    status in a MemoryError. Each is named in one Warning and left alone; the others work."""
    scheduled_config(lynx_dir)
    folder = lynx_dir / SCHEDULERS
    folder.mkdir(parents=True)
    os.mkfifo(folder / "fifo.json")
    (folder / "zero.json").symlink_to("/dev/zero")
    if os.geteuid() == 0:
        os.mknod(folder / "device.json", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero itself
    with open(folder / "huge.json", "wb") as huge:
        huge.truncate(4 * 1024**3)  # sparse: no disk used
    os.mkfifo(lynx_dir / ".lynx_pid.json")
    planted = sorted(os.listdir(folder))

    started = start_background(lynx_dir, "--name", "other")
    assert started.returncode == 0, started.stdout + started.stderr
    (lynx_dir / ".lynx_pid.json").unlink()  # replaced by the start: plant it again
    os.mkfifo(lynx_dir / ".lynx_pid.json")
    status = run_lynx("status", "--json", cwd=lynx_dir, timeout=20)
    assert status.returncode == 0, status.stdout + status.stderr
    assert [row["name"] for row in json.loads(status.stdout)] == ["other"]
    warnings = status.stderr.splitlines()
    assert all(line.startswith("Warning: ") for line in warnings) and "Traceback" not in status.stderr
    assert len(warnings) == len(planted) + 1, warnings
    assert any("fifo.json: cannot read it (it is a FIFO, not a regular file)" in line for line in warnings)
    assert any("zero.json: cannot read it (it is a symbolic link" in line for line in warnings)
    assert any("huge.json: cannot read it (it is larger than 1048576 bytes)" in line for line in warnings)
    assert any(".lynx_pid.json: cannot read it: it is a FIFO, not a regular file" in line for line in warnings)
    if os.geteuid() == 0:
        assert any("device.json: cannot read it (it is a character device" in line for line in warnings)

    logs = run_lynx("logs", "other", cwd=lynx_dir, timeout=20)
    assert logs.returncode == 0, logs.stdout + logs.stderr
    stopped = run_lynx("stop", "other", "-y", cwd=lynx_dir, timeout=40)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Stopped the background Lynx 'other'" in stopped.stdout
    fifo = run_lynx("stop", "fifo", "-y", cwd=lynx_dir, timeout=20)
    assert fifo.returncode == 1 and "fifo.json: cannot read it" in one_error_line(fifo)
    assert sorted(os.listdir(folder)) == planted


# --- item 5: the modes of new files ---------------------------------------------------------------


def run_with_umask(umask: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *lynx_command(), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=40,
    )


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o664), (0o077, 0o600), (0o022, 0o644)])
def test_state_files_get_the_modes_the_umask_gives(lynx_dir: Path, umask: int, mode: int) -> None:
    """Under umask 002 in a setgid group folder, a colleague's runs must be recorded too: no fixed 0644."""
    scheduled_config(lynx_dir)
    once = write_config(lynx_dir, "steps:\n  - script: step.py\n", name="once.yaml")
    assert run_with_umask(umask, "start", "-ni", "-cf", str(once), cwd=lynx_dir).returncode == 0
    started = run_with_umask(umask, "start", "-bg", "-cf", "config.yaml", "-lf", "x.log", cwd=lynx_dir)
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: live_entry(lynx_dir, "config").get("next_run"), timeout=30)  # rewritten by the scheduler
    assert run_with_umask(umask, "stop", "-y", cwd=lynx_dir).returncode == 0
    assert stat.S_IMODE(os.stat(lynx_dir / ".lynx/stopped/config.json").st_mode) == mode
    assert run_with_umask(umask, "start", "-bg", "-cf", "config.yaml", "-lf", "x.log", cwd=lynx_dir).returncode == 0
    wait_for(lambda: live_entry(lynx_dir, "config").get("next_run"), timeout=30)
    for name in (".lynx/runs.jsonl", ".lynx_pid.json", ".lynx/schedulers/config.json"):
        assert stat.S_IMODE(os.stat(lynx_dir / name).st_mode) == mode, name
    for name in (".lynx", ".lynx/schedulers", ".lynx/stopped"):
        assert stat.S_IMODE(os.stat(lynx_dir / name).st_mode) == 0o777 & ~umask, name
    assert run_lynx("stop", "-y", cwd=lynx_dir, timeout=40).returncode == 0


# --- item 6: records that parse but are wrong -----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"last_run": "oops"}, "'last_run' is not an object"),
        ({"schedule": 5}, "'schedule' is not a string"),
        ({"config_file": ["a"]}, "'config_file' is not a string"),
        ({"last_run": {"result": "ok", "duration_s": "1e400"}}, "cannot read it (1e400 is too large for a number)"),
        ({"last_run": {"result": "ok", "duration_s": -1}}, "'last_run.duration_s' is not a finite number from 0"),
        ({"next_run": "tomorrow"}, "'next_run' is not an ISO 8601 time"),
        ({"current_step": 0}, "'current_step' is not a whole number from 1"),
        ({"pid": True}, "'pid' is not a whole number from 1"),
        ({"cmdline": []}, "'cmdline' is not a non-empty list of strings"),
        ({"directory": {"path": "/x", "device": 1}}, "it has no 'directory.inode'"),
        ({"ended": {"at": "2026-01-01T00:00:00+00:00", "reason": "error", "exit_code": "1"}}, "'ended.exit_code'"),
        ({"started_at": "NaN"}, "'started_at' is not an ISO 8601 time"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else None,
)
def test_a_record_that_parses_but_is_wrong_is_named_and_left_out(
    lynx_dir: Path, change: dict[str, Any], named: str
) -> None:
    """Issue 14 #6: no traceback in status; the README's Warning line names the record and its field."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    folder = lynx_dir / SCHEDULERS
    folder.mkdir(parents=True)
    good = {"name": "good", "pid": ended.pid, "cmdline": ["true"], "last_run": None}
    (folder / "good.json").write_text(json.dumps(good))
    text = json.dumps({**good, "name": "bad", **change})
    if change == {"last_run": {"result": "ok", "duration_s": "1e400"}}:
        text = text.replace('"1e400"', "1e400")
    (folder / "bad.json").write_text(text)

    for command in (["status"], ["status", "--json"]):
        result = run_lynx(*command, cwd=lynx_dir)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        (warning,) = result.stderr.splitlines()
        assert warning.startswith(f"Warning: {folder / 'bad.json'}") and named in warning, warning
        assert warning.endswith("it is left alone; remove it if no background Lynx named 'bad' runs here")
        assert "good" in result.stdout and "bad" not in result.stdout
    stop = run_lynx("stop", "bad", "-y", cwd=lynx_dir)
    assert stop.returncode == 1 and named in one_error_line(stop)
    assert (folder / "bad.json").read_text() == text


def test_a_record_nested_a_hundred_thousand_deep_or_with_nan_is_left_out(lynx_dir: Path) -> None:
    folder = lynx_dir / SCHEDULERS
    folder.mkdir(parents=True)
    (folder / "deep.json").write_text("[" * 100_000)
    (folder / "nan.json").write_text('{"name": "nan", "pid": 5, "cmdline": ["x"], "create_time": NaN}')
    (folder / "digits.json").write_text('{"name": "digits", "pid": ' + "9" * 100_000 + ', "cmdline": ["x"]}')
    result = run_lynx("status", cwd=lynx_dir, timeout=20)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 3 and all(
        line.startswith("Warning: ") and "cannot read it" in line for line in result.stderr.splitlines()
    )
