"""Picking up where a run stopped (issue 16): --from/--until/--only, lynx retry, KEY=VALUE overrides; end to end."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config, write_script

FOUR = """
    steps:
      - script: prep.py
        name: prep
      - script: train.py
      - script: evaluate.py
        name: evaluate
      - script: deploy.py
    """


@pytest.fixture
def four(tmp_path: Path) -> Path:
    for name in ("prep.py", "train.py", "evaluate.py", "deploy.py"):
        marker_step(tmp_path, name)
    write_default_config(tmp_path, FOUR)
    return tmp_path


def write_default_config(directory: Path, text: str) -> Path:
    """The config where 'lynx start' looks without -cf: conf/config.yaml."""
    (directory / "conf").mkdir(exist_ok=True)
    return write_config(directory, text, name="conf/config.yaml")


def runs(directory: Path) -> list[dict[str, Any]]:
    result = run_lynx("history", "--json", "-n", "0", cwd=directory)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def names(directory: Path) -> list[str]:
    return [line.split()[0] for line in ran(directory)]


@pytest.mark.parametrize(
    ("options", "expected", "said"),
    [
        (["--from", "3"], ["evaluate.py", "deploy.py"], "--from 3"),
        (["--from", "evaluate"], ["evaluate.py", "deploy.py"], "--from evaluate"),
        (["--until", "2"], ["prep.py", "train.py"], "--until 2"),
        (
            ["--from", "prep", "--until", "evaluate"],
            ["prep.py", "train.py", "evaluate.py"],
            "--from prep --until evaluate",
        ),
        (["--only", "2", "--only", "deploy.py"][:2], ["train.py"], "--only 2"),
        (["--only", "evaluate", "--only", "1"], ["prep.py", "evaluate.py"], "--only evaluate --only 1"),
    ],
)
def test_a_slice_runs_only_its_steps_and_says_which_it_skips(
    four: Path, options: list[str], expected: list[str], said: str
) -> None:
    result = run_lynx("start", "-ni", "-lf", "lynx.log", *options, cwd=four)

    assert result.returncode == 0, result.stdout + result.stderr
    assert names(four) == expected
    skipped = [
        number for number in (1, 2, 3, 4) if f"Step {number} (" in result.stdout and "not selected" in result.stdout
    ]
    assert skipped
    log = (four / "lynx.log").read_text(encoding="utf-8")
    for text in (result.stdout, log):
        assert f": not selected ({said})." in text
    assert (
        f"All {len(expected)} selected step{'s' if len(expected) > 1 else ''} completed successfully." in result.stdout
    )
    (run,) = runs(four)
    results = {step["number"]: step["result"] for step in run["steps"]}
    assert sorted(number for number, outcome in results.items() if outcome == "ok") == sorted(
        number for number, name in enumerate(["prep.py", "train.py", "evaluate.py", "deploy.py"], 1) if name in expected
    )
    assert all(outcome in ("ok", "skipped") for outcome in results.values())
    assert run["selection"]


def test_the_summary_shows_skipped_steps_and_the_result_counts_only_the_selected(four: Path) -> None:
    marker_step(four, "prep.py", exit_code=1)

    result = run_lynx("start", "-ni", "--from", "2", cwd=four)

    assert result.returncode == 0
    assert "Skipping Step 1 (prep): not selected (--from 2)." in result.stdout
    assert "  Step 1 (prep) ......................... skipped     0.00 s  (not selected)" in result.stdout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--from", "7"],
            "--from 7: there is no such step; the steps are 1 (prep), 2 (train.py), 3 (evaluate), 4 (deploy.py)",
        ),
        (
            ["--only", "nope"],
            "--only nope: there is no such step; the steps are 1 (prep), 2 (train.py), 3 (evaluate), 4 (deploy.py)",
        ),
        (["--from", "evaluate", "--until", "1"], "--from evaluate (step 3) comes after --until 1 (step 1)"),
        (["--only", "1", "--from", "2"], "--only picks steps one by one: use it without --from and --until"),
    ],
)
def test_a_bad_slice_is_a_usage_error_naming_the_steps(four: Path, options: list[str], message: str) -> None:
    for command in (["start", "-ni"], ["validate"]):
        result = run_lynx(*command, *options, cwd=four)

        assert result.returncode == 2
        assert result.stderr == f"Error: {message}\n"
    assert ran(four) == []


def test_the_dialogs_rerun_of_the_whole_pipeline_reruns_the_selection(tmp_path: Path) -> None:
    marker_step(tmp_path, "prep.py")
    marker_step(tmp_path, "train.py")
    write_script(
        tmp_path,
        "flaky.py",
        """
        import os, sys
        with open("ran.txt", "a") as handle:
            handle.write("flaky.py\\n")
        failed = os.path.exists("failed-once")
        open("failed-once", "w").close()
        sys.exit(0 if failed else 1)
        """,
    )
    write_default_config(tmp_path, "steps:\n  - script: prep.py\n  - script: train.py\n  - script: flaky.py\n")
    child = pexpect.spawn(
        lynx_command()[0], [*lynx_command()[1:], "start", "--from", "2"],
        cwd=str(tmp_path), env=clean_env(), encoding="utf-8", timeout=60,
    )  # fmt: skip
    try:
        child.expect_exact("Do you want to rerun this step? (y/n)")
        child.sendline("n")
        child.expect_exact("Do you want to rerun the whole pipeline from the beginning? (y/n)")
        child.sendline("y")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)

    assert child.exitstatus == 0
    assert names(tmp_path) == ["train.py", "flaky.py", "train.py", "flaky.py"]


def test_every_fire_of_a_schedule_runs_the_slice(lynx_dir: Path) -> None:
    marker_step(lynx_dir, "prep.py")
    marker_step(lynx_dir, "train.py")
    write_default_config(
        lynx_dir,
        "cron:\n  second: '*/1'\n  run_on_start: true\nsteps:\n  - script: prep.py\n  - script: train.py\n",
    )
    scheduler = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "--only", "2"],
        cwd=lynx_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: len(ran(lynx_dir)) >= 3, timeout=60)
    finally:
        scheduler.send_signal(signal.SIGINT)
        scheduler.wait(timeout=60)
    assert set(names(lynx_dir)) == {"train.py"}


def test_retry_reruns_a_failed_run_from_its_failed_step_and_records_retry_of(four: Path) -> None:
    write_script(
        four,
        "evaluate.py",
        """
        import os, sys
        with open("ran.txt", "a") as handle:
            handle.write("evaluate.py\\n")
        sys.exit(0 if os.path.exists("fixed") else 3)
        """,
    )
    failed = run_lynx("start", "-ni", cwd=four)
    assert failed.returncode == 1
    assert names(four) == ["prep.py", "train.py", "evaluate.py"]
    (four / "ran.txt").unlink()
    (four / "fixed").touch()

    result = run_lynx("retry", "-ni", cwd=four)

    assert result.returncode == 0, result.stdout + result.stderr
    assert names(four) == ["evaluate.py", "deploy.py"]
    first_run = runs(four)[1]
    assert result.stdout.startswith(f"Retrying run {first_run['run_id']} (failed) from step 3.\n")
    retried = runs(four)[0]
    assert retried["retry_of"] == first_run["run_id"]
    assert [step["result"] for step in retried["steps"]] == ["skipped", "skipped", "ok", "ok"]
    shown = run_lynx("history", "-n", "1", cwd=four).stdout
    assert f"(retry of {first_run['run_id']}, --from 3)" in shown.splitlines()[0]
    # Retried to success: there is nothing more to retry.
    again = run_lynx("retry", "-ni", cwd=four)
    assert again.returncode == 2
    assert again.stderr.startswith("Error: there is no failed or interrupted run")


def test_retry_refuses_an_edited_config_unless_forced(four: Path) -> None:
    marker_step(four, "train.py", exit_code=2)
    assert run_lynx("start", "-ni", cwd=four).returncode == 1
    config = four / "conf" / "config.yaml"
    config.write_text(config.read_text() + "# edited\n")
    (four / "ran.txt").unlink()

    refused = run_lynx("retry", "-ni", cwd=four)

    assert refused.returncode == 2
    assert "has changed since run" in refused.stderr and "--force" in refused.stderr
    assert ran(four) == []
    marker_step(four, "train.py")
    forced = run_lynx("retry", "-ni", "--force", cwd=four)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert names(four) == ["train.py", "evaluate.py", "deploy.py"]


def test_retry_of_an_interrupted_run(four: Path) -> None:
    write_script(
        four,
        "train.py",
        """
        import os, time
        with open("ran.txt", "a") as handle:
            handle.write("train.py\\n")
        if not os.path.exists("quick"):
            print("waiting", flush=True)
            time.sleep(60)
        """,
    )
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni"], cwd=four, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: names(four) == ["prep.py", "train.py"], timeout=60)
        lynx.send_signal(signal.SIGINT)
        assert lynx.wait(timeout=60) == 130
    finally:
        if lynx.poll() is None:
            lynx.kill()
        lynx.communicate()
    (four / "quick").touch()
    (four / "ran.txt").unlink()

    result = run_lynx("retry", "-ni", cwd=four)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "(interrupted) from step 2." in result.stdout
    assert names(four) == ["train.py", "evaluate.py", "deploy.py"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["ok-run"], "no run in this directory's history has an id starting with 'ok-run'"),
        ([], "there is no failed or interrupted run in this directory's history to retry"),
    ],
)
def test_retry_with_nothing_to_retry_is_one_error(four: Path, arguments: list[str], message: str) -> None:
    assert run_lynx("start", "-ni", cwd=four).returncode == 0
    (four / "ran.txt").unlink()

    result = run_lynx("retry", "-ni", *arguments, cwd=four)

    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: {message}")
    assert ran(four) == []


def test_retry_of_a_run_that_succeeded_or_an_ambiguous_id_is_refused(four: Path) -> None:
    assert run_lynx("start", "-ni", cwd=four).returncode == 0
    assert run_lynx("start", "-ni", cwd=four).returncode == 0
    first, second = runs(four)[1]["run_id"], runs(four)[0]["run_id"]

    succeeded = run_lynx("retry", first, cwd=four)
    ambiguous = run_lynx("retry", "20", cwd=four)

    assert succeeded.returncode == 2
    assert succeeded.stderr == f"Error: run {first} ended ok: there is nothing to retry\n"
    assert ambiguous.returncode == 2
    assert "is the start of several runs' ids" in ambiguous.stderr and second in ambiguous.stderr


def test_overrides_reach_the_steps_and_are_recorded(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "train.py",
        f"""
        import sys
        with open({str(tmp_path / "argv.txt")!r}, "a") as handle:
            handle.write(" ".join(sys.argv[1:]) + "\\n")
        """,
    )
    write_default_config(
        tmp_path,
        """
        vars: {lr: 0.1, py: 3.9}
        steps:
          - script: train.py
            arguments: ["--lr ${vars.lr} --py ${vars.py}"]
        """,
    )

    result = run_lynx("start", "-ni", "vars.lr=0.01", "vars.py=3.10", "+steps.1.timeout=600", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "argv.txt").read_text() == "--lr 0.01 --py 3.10\n"
    (run,) = runs(tmp_path)
    assert run["overrides"] == ["vars.lr=0.01", "vars.py=3.10", "+steps.1.timeout=600"]
    shown = run_lynx("validate", "vars.lr=0.01", "+steps.1.timeout=600", cwd=tmp_path).stdout
    assert "--lr 0.01 --py 3.9" in shown and "  timeout: 600 s" in shown


def test_an_override_of_a_cron_field_changes_the_schedule(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    write_default_config(tmp_path, "cron:\n  hour: 3\n  minute: 0\nsteps:\n  - script: step.py\n")

    result = run_lynx("validate", "cron.hour=5", "+cron.second=0", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Schedule: hour=5, minute=0, second=0" in result.stdout
    assert all(line.endswith("05:00:00") for line in result.stdout.splitlines()[-5:])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "vars.lrr=1",
            "override 'vars.lrr=1': vars has no key 'lrr' (did you mean 'lr'? to add one, write +vars.lrr=1)",
        ),
        (
            "steps.3.timeout=5",
            "override 'steps.3.timeout=5': there is no step 3 (steps count from 1, as Lynx shows them: 1 to 1)",
        ),
        ("steps.1.timeout=abc", None),
        ("novalue", "override 'novalue': write KEY=VALUE, KEY a dotted path such as vars.lr or steps.2.timeout"),
    ],
)
def test_a_bad_override_is_one_error_and_nothing_runs(tmp_path: Path, override: str, message: str | None) -> None:
    marker_step(tmp_path, "step.py")
    write_default_config(tmp_path, "vars: {lr: 1}\nsteps:\n  - script: step.py\n    timeout: 10\n")

    result = run_lynx("start", "-ni", override, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    if message is None:
        assert "'timeout' must be a number of seconds" in result.stderr
    else:
        assert result.stderr == f"Error: {message}\n"
    assert ran(tmp_path) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+steps.train.timeout=abc", "step 2 (step.py): 'timeout' must be a number of seconds"),
        (
            "steps.nope.timeout=5",
            "override 'steps.nope.timeout=5': no step is named 'nope' "
            "(steps count from 1; named steps: 'prep', 'train')",
        ),
        (
            "steps.prep.timeout=5",
            "override 'steps.prep.timeout=5': several steps are named 'prep': give the step's number",
        ),
    ],
)
def test_an_override_finds_a_step_by_its_name(tmp_path: Path, override: str, message: str) -> None:
    marker_step(tmp_path, "step.py")
    write_default_config(
        tmp_path,
        "steps:\n  - {script: step.py, name: prep}\n  - {script: step.py, name: train}\n"
        "  - {script: step.py, name: prep}\n",
    )

    result = run_lynx("start", "-ni", override, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert ran(tmp_path) == []


def test_a_background_scheduler_keeps_its_slice_and_overrides(lynx_dir: Path) -> None:
    write_script(
        lynx_dir,
        "step.py",
        f"""
        import sys
        with open({str(lynx_dir / "ran.txt")!r}, "a") as handle:
            handle.write(" ".join(sys.argv) + "\\n")
        """,
    )
    write_default_config(
        lynx_dir,
        "vars: {x: 1}\ncron:\n  second: '*/1'\n  run_on_start: true\nsteps:\n"
        "  - script: step.py\n    arguments: [one]\n  - script: step.py\n    arguments: ['two ${vars.x}']\n",
    )

    started = run_lynx("start", "-bg", "--from", "2", "vars.x=42", "-lf", "lynx.log", cwd=lynx_dir)

    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: len(ran(lynx_dir)) >= 2, timeout=60)
    assert {line.split(" ", 1)[1] for line in ran(lynx_dir)} == {"two 42"}
    history = runs(lynx_dir)[0]
    assert history["selection"] == {"from": "2"} and history["overrides"] == ["vars.x=42"]
    status = run_lynx("status", cwd=lynx_dir)
    assert "config runs with: --from 2 vars.x=42\n" in status.stdout
    stopped = run_lynx("stop", "-y", cwd=lynx_dir)
    assert stopped.returncode == 0
