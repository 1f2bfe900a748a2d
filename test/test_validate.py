"""``lynx validate``: the same checks as ``start``, then the command lines and fire times, nothing run."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
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


# --- values read from the environment (issue 14.15) -----------------------------------------------

SECRET = "tok-5ecr3t-value"

FROM_THE_ENVIRONMENT = """
    vars:
      token: ${oc.env:API_TOKEN}
      both: {SHARED: "${oc.env:API_TOKEN}", PLAIN: plain}
    cron:
      second: ${oc.env:EVERY,'*/10'}
    steps:
      - script: dump.py
        name: ${oc.env:STEP_NAME}
        arguments: ["--token ${oc.env:API_TOKEN}", "${oc.env:EXTRA}", "--data ${vars.both.PLAIN}"]
        env: {TOKEN: "${oc.env:API_TOKEN}", VIA: "${vars.token}", AUTH: "Bearer ${oc.env:API_TOKEN}", HOME: null}
      - script: ${oc.env:SCRIPT}
        arguments: {key: "${oc.env:API_TOKEN}", "--n": 3}
        env: ${vars.both}
        cwd: ${oc.env:WORKDIR}
"""


def write_environment_config(directory: Path) -> dict[str, str]:
    """A config whose secrets come from the environment, the step that dumps what it gets, and that environment."""
    write_script(
        directory,
        "dump.py",
        f"""
        import json, os, sys
        with open({str(directory / "got.jsonl")!r}, "a") as handle:
            handle.write(json.dumps({{"argv": sys.argv[1:], "TOKEN": os.environ.get("TOKEN"),
                                      "VIA": os.environ.get("VIA"), "AUTH": os.environ.get("AUTH"),
                                      "SHARED": os.environ.get("SHARED")}}) + "\\n")
        """,
    )
    (directory / f"dir-{SECRET}").mkdir()
    write_config(directory, FROM_THE_ENVIRONMENT)
    return clean_env(
        API_TOKEN=SECRET,
        STEP_NAME=f"name-{SECRET}",
        EXTRA=f"--extra {SECRET} more",
        SCRIPT=str(directory / "dump.py"),
        WORKDIR=f"dir-{SECRET}",
    )


def test_validate_shows_values_read_from_the_environment_as_their_interpolation(tmp_path: Path) -> None:
    env = write_environment_config(tmp_path)

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    first = lines[lines.index("Step 1: dump.py") :]
    assert first[1].endswith(" dump.py --token ${oc.env:API_TOKEN} ${oc.env:EXTRA} --data plain")
    assert first[2:4] == [
        "  name: ${oc.env:STEP_NAME}",
        "  env: TOKEN=${oc.env:API_TOKEN}, VIA=${vars.token}, AUTH=Bearer ${oc.env:API_TOKEN}, HOME (removed)",
    ]
    second = lines[lines.index("Step 2: ${oc.env:SCRIPT}") :]
    assert second[1].endswith(" ${oc.env:SCRIPT} --key ${oc.env:API_TOKEN} --n 3")
    assert second[2:4] == ["  env: SHARED=${oc.env:API_TOKEN}, PLAIN=plain", "  cwd: ${oc.env:WORKDIR}"]
    assert "Schedule: second=${oc.env:EVERY,'*/10'}" in lines
    assert ran(tmp_path) == [] and not (tmp_path / "got.jsonl").exists()


def test_values_read_from_the_environment_still_reach_the_steps(tmp_path: Path) -> None:
    env = write_environment_config(tmp_path)

    # Without -ni a config with a cron section runs once.
    result = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Processing Step 1: name-{SECRET}..." in result.stdout
    first, second = [json.loads(line) for line in (tmp_path / "got.jsonl").read_text().splitlines()]
    assert first == {
        "argv": ["--token", SECRET, "--extra", SECRET, "more", "--data", "plain"],
        "TOKEN": SECRET,
        "VIA": SECRET,
        "AUTH": f"Bearer {SECRET}",
        "SHARED": None,
    }
    assert second["argv"] == ["--key", SECRET, "--n", "3"] and second["SHARED"] == SECRET


def test_an_error_about_a_value_read_from_the_environment_shows_its_interpolation(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    write_config(tmp_path, "steps:\n  - script: one.py\n    timeout: ${oc.env:API_TOKEN}\n")

    for command in ("validate", "start"):
        result = run_lynx(command, "-cf", "config.yaml", cwd=tmp_path, env=clean_env(API_TOKEN=SECRET))

        assert result.returncode == 2, result.stdout + result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert result.stderr.strip() == (
            "Error: config.yaml: step 1 (one.py): 'timeout' must be a number of seconds more than 0 and at most "
            "1e+09, not '${oc.env:API_TOKEN}'"
        )


def test_the_srun_line_of_validate_shows_values_read_from_the_environment_as_written(tmp_path: Path) -> None:
    if shutil.which("srun") is None or subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        if os.environ.get("LYNX_REQUIRE_SLURM") == "1":
            pytest.fail("LYNX_REQUIRE_SLURM=1 but no SLURM cluster answers (test/slurm/cluster.sh start)")
        pytest.skip("no SLURM cluster answers: run 'test/slurm/cluster.sh start' as root on Debian")
    marker_step(tmp_path, "train.py")
    (tmp_path / f"dir-{SECRET}").mkdir()
    write_config(
        tmp_path,
        """
        steps:
          - script: train.py
            name: ${oc.env:STEP_NAME}
            cwd: ${oc.env:WORKDIR}
            arguments: ["--token ${oc.env:API_TOKEN}"]
            slurm: {time: 5, mail-user: "${oc.env:API_TOKEN}"}
        """,
    )
    env = clean_env(API_TOKEN=SECRET, STEP_NAME=f"name-{SECRET}", WORKDIR=f"dir-{SECRET}")

    result = run_lynx("validate", "-cf", "config.yaml", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert re.search(
        r"\n  runs on SLURM: srun '--job-name=lynx:config:\$\{oc.env:STEP_NAME\}' '--chdir=\$\{oc.env:WORKDIR\}' "
        r"--export=ALL --input=none --quiet --time=5 '--mail-user=\$\{oc.env:API_TOKEN\}' \S*python\S* "
        rf"{re.escape(str(tmp_path / 'train.py'))} --token \$\{{oc.env:API_TOKEN\}}\n",
        result.stdout,
    ), result.stdout
    assert "  SLURM would accept it: Job " in result.stdout
