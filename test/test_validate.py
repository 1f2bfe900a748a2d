"""``lynx validate``: the same checks as ``start``, then the command lines and fire times, nothing run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import clean_env, marker_step, ran, run_lynx, write_config, write_script

FIRE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def fire_times(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Next 5 runs")) + 1
    return lines[start:]


def test_a_valid_config_shows_each_steps_exact_command_line_and_runs_nothing(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    write_script(tmp_path, "sub dir/echo args.py", "import sys\nprint(repr(sys.argv[1:]))\n")
    write_config(
        tmp_path,
        """
        steps:
          - script: one.py
          - script: sub dir/echo args.py
            arguments: ["--text 'two words'", --n 3, '"it''s $HOME"']
        """,
    )

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == []
    lines = result.stdout.splitlines()
    assert lines[0] == "config.yaml is valid: 2 steps, run once."
    assert lines[2] == "Step 1: one.py"
    assert lines[5] == "Step 2: sub dir/echo args.py"
    assert len(lines) == 7
    python = shlex.split(lines[3])[0]
    assert Path(python).resolve() == Path(sys.executable).resolve()
    assert shlex.split(lines[6]) == [python, "sub dir/echo args.py", "--text", "two words", "--n", "3", "it's $HOME"]
    # Pasted into a shell, the line runs the step with exactly the arguments Lynx gives it.
    pasted = subprocess.run(lines[6], shell=True, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert pasted.stdout == "['--text', 'two words', '--n', '3', \"it's $HOME\"]\n"


def test_a_cron_section_shows_the_schedule_and_its_next_five_fire_times_in_its_timezone(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    write_config(
        tmp_path,
        """
        cron:
          hour: 3
          minute: 30
          timezone: America/New_York
        steps:
          - script: one.py
        """,
    )

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid: 1 step, run on a cron schedule" in result.stdout
    assert "Schedule: hour=3, minute=30, timezone=America/New_York" in result.stdout
    assert "Next 5 runs (America/New_York):" in result.stdout
    times = fire_times(result.stdout)
    assert len(times) == 5
    assert all(FIRE_TIME.match(line) and line.endswith(" 03:30:00") for line in times)
    days = [date.fromisoformat(line[:10]) for line in times]
    assert [b - a for a, b in zip(days, days[1:])] == [timedelta(days=1)] * 4
    assert ran(tmp_path) == []


def test_fire_times_follow_the_seconds_field(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    write_config(tmp_path, "cron:\n  second: '*/15'\nsteps:\n  - script: one.py\n")

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0
    times = [datetime.strptime(line, "%Y-%m-%d %H:%M:%S") for line in fire_times(result.stdout)]
    assert len(times) == 5
    assert all(time.second % 15 == 0 for time in times)
    assert [b - a for a, b in zip(times, times[1:])] == [timedelta(seconds=15)] * 4


def test_a_schedule_that_ends_soon_shows_its_last_fire_times(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    end = (datetime.now() + timedelta(days=2)).strftime("%Y-%m-%d 00:00:00")
    write_config(tmp_path, f"cron:\n  hour: 12\n  end_date: '{end}'\nsteps:\n  - script: one.py\n")

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    times = fire_times(result.stdout)
    assert times[-1] == "(no more fire times)"
    assert 1 <= len(times) - 1 <= 2


@pytest.mark.parametrize(
    "config",
    [
        "steps:\n  - script: one.py\n    argument: [x]\n",
        "steps:\n  - script: missing.py\n",
        "step:\n  - script: one.py\n",
        "steps: []\n",
        "cron:\n  hour: 25\nsteps:\n  - script: one.py\n",
        "steps:\n  - script: one.py\n  bad indent\n",
    ],
    ids=["unknown key", "missing script", "no steps", "empty steps", "bad cron", "bad YAML"],
)
def test_an_invalid_config_fails_exactly_as_start_does(tmp_path: Path, config: str) -> None:
    marker_step(tmp_path, "one.py")
    write_config(tmp_path, config)

    validated = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path)
    started = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert validated.returncode == started.returncode == 2
    assert validated.stderr == started.stderr
    assert validated.stderr.startswith("Error: config.yaml") and validated.stderr.count("\n") == 1
    assert validated.stdout == ""
    assert ran(tmp_path) == []


def test_a_missing_config_file_fails_as_start_does(tmp_path: Path) -> None:
    validated = run_lynx("validate", "-cf", "nowhere.yaml", cwd=tmp_path)
    started = run_lynx("start", "-cf", "nowhere.yaml", cwd=tmp_path)

    assert validated.returncode == started.returncode == 2
    assert validated.stderr == started.stderr == "Error: the configuration file nowhere.yaml does not exist\n"


def test_validate_uses_the_default_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    marker_step(tmp_path, "one.py")
    write_config(tmp_path / "conf", "steps:\n  - script: one.py\n")

    result = run_lynx("validate", cwd=tmp_path, env=clean_env())

    assert result.returncode == 0
    assert result.stdout.startswith("conf/config.yaml is valid: 1 step, run once.")


def test_the_steps_extra_keys_and_a_crontab_schedule_are_shown(tmp_path: Path) -> None:
    marker_step(tmp_path, "train.py")
    marker_step(tmp_path, "plain.py")
    (tmp_path / "models").mkdir()
    write_config(
        tmp_path,
        """
        vars:
          data: /data
        cron:
          crontab: "30 4 * * 1-5"
          timezone: Asia/Tokyo
          run_on_start: true
          misfire_grace_time: 30
        steps:
          - script: train.py
            name: train
            arguments: {input_file: "${vars.data}/x", epochs: 5, verbose: true}
            env: {CUDA_VISIBLE_DEVICES: 1, HOME: null}
            cwd: models
            timeout: 3600
            retries: 2
            retry_delay: 5
            retry_backoff: 2
            continue_on_error: true
          - script: plain.py
        """,
    )

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == [] and ran(tmp_path / "models") == []
    text = result.stdout
    first = text[text.index("Step 1: train.py") : text.index("Step 2: plain.py")].splitlines()
    assert shlex.split(first[1])[1:] == [
        str(tmp_path / "train.py"),
        "--input_file",
        "/data/x",
        "--epochs",
        "5",
        "--verbose",
        "True",
    ]
    assert first[2:] == [
        "  name: train",
        "  env: CUDA_VISIBLE_DEVICES=1, HOME (removed)",
        f"  cwd: {tmp_path / 'models'}",
        "  timeout: 3600 s",
        "  retries: 2",
        "  retry_delay: 5 s",
        "  retry_backoff: 2",
        "  continue_on_error: true",
        "",
    ]
    second = text[text.index("Step 2: plain.py") : text.index("Schedule:")].splitlines()
    assert len(second) == 3 and second[2] == ""  # no extra keys: the heading and the command line
    assert "Schedule: crontab='30 4 * * 1-5', timezone=Asia/Tokyo\n" in text
    assert "  misfire_grace_time: 30 s\n  run_on_start: true\nNext 5 runs (Asia/Tokyo):\n" in text
    times = fire_times(text)
    assert len(times) == 5
    assert all(line.endswith(" 04:30:00") for line in times)
    assert all(date.fromisoformat(line[:10]).isoweekday() <= 5 for line in times)


def test_fire_times_across_clocks_going_back_run_on_in_real_time(tmp_path: Path) -> None:
    """Each time is asked for after the last one as the scheduler asks: the repeated hour is listed once per pass."""
    from lynx.commands.validate import describe
    from lynx.config import load_pipeline

    marker_step(tmp_path, "one.py")
    config = write_config(tmp_path, "cron: {minute: '*/30', timezone: Europe/Berlin}\nsteps:\n  - script: one.py\n")
    pipeline = load_pipeline(config, cwd=str(tmp_path))

    lines = describe(pipeline, python="python", now=datetime(2026, 10, 24, 23, 50, tzinfo=timezone.utc))

    start = next(i for i, line in enumerate(lines) if line.startswith("Next 5 runs")) + 1
    # 02:00 and 02:30 CEST, 02:00 and 02:30 CET, then 03:00 CET: on, not round and round.
    assert [line[11:16] for line in lines[start:]] == ["02:00", "02:30", "02:00", "02:30", "03:00"]


def test_a_tz_that_names_no_zone_is_one_error_line_as_with_start(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    write_config(tmp_path, "cron: {second: '*/10'}\nsteps:\n  - script: one.py\n")

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path, env=clean_env(TZ="CET-1CEST,M3.5.0,M10.5.0/3"))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: cron: the local time zone cannot be told from TZ="), errors


def test_whole_numbers_are_shown_as_written(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    write_config(
        tmp_path, "steps:\n  - script: one.py\n    retries: 1234567\n    timeout: 1234567\n    retry_backoff: 1.5\n"
    )

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "  retries: 1234567" in result.stdout
    assert "  timeout: 1234567 s" in result.stdout
    assert "  retry_backoff: 1.5" in result.stdout
