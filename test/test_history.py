"""The run history (``.lynx/runs.jsonl``), ``lynx history`` and the summary that ends every run, end to end."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config, write_script

HISTORY = Path(".lynx") / "runs.jsonl"
RUN_FIELDS = {
    "run_id",
    "name",
    "config_file",
    "config_sha256",
    "host",
    "user",
    "python",
    "lynx_version",
    "started_at",
    "ended_at",
    "duration_s",
    "result",
    "failed_step",
    "steps",
}
STEP_FIELDS = {
    "number",
    "script",
    "name",
    "argv",
    "attempts",
    "returncode",
    "duration_s",
    "result",
    "started_at",
    "ended_at",
}
WARNING = "Cannot write the run history"


def history_json(directory: Path, *args: str) -> list[dict[str, Any]]:
    result = run_lynx("history", "--json", *args, cwd=directory)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = json.loads(result.stdout)
    assert isinstance(runs, list)
    return runs


def two_step_config(directory: Path, second_exit: int, name: str = "config.yaml") -> Path:
    marker_step(directory, "one.py")
    marker_step(directory, f"two_{second_exit}.py", exit_code=second_exit)
    return write_config(
        directory,
        f"""
        steps:
          - script: one.py
            arguments: [--alpha 1]
          - script: two_{second_exit}.py
        """,
        name=name,
    )


def summary(stdout: str) -> list[str]:
    """The lines from the summary's heading to its total."""
    lines = stdout.splitlines()
    start = lines.index("Run summary:")
    end = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith("Total "))
    return lines[start : end + 1]


# --- foreground runs --------------------------------------------------------------------------


def test_a_passing_and_a_failing_run_are_recorded_newest_first(tmp_path: Path) -> None:
    good = two_step_config(tmp_path, 0, "good.yaml")
    bad = two_step_config(tmp_path, 3, "bad.yaml")
    before = datetime.now().astimezone()

    assert run_lynx("start", "-ni", "-cf", "good.yaml", cwd=tmp_path).returncode == 0
    assert run_lynx("start", "-ni", "-cf", "bad.yaml", cwd=tmp_path).returncode == 1

    failed, passed = history_json(tmp_path)
    for run, config in ((passed, good), (failed, bad)):
        assert set(run) == RUN_FIELDS
        assert run["name"] is None
        assert run["config_file"] == str(config)
        assert run["config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
        assert run["host"] == os.uname().nodename
        # The interpreter running Lynx (the console script's), which runs the .py steps.
        assert Path(run["python"]).resolve() == Path(sys.executable).resolve()
        assert run["lynx_version"]
        started = datetime.fromisoformat(run["started_at"])
        ended = datetime.fromisoformat(run["ended_at"])
        assert started.tzinfo is not None and ended.tzinfo is not None
        assert before - timedelta(seconds=1) <= started <= ended
        assert 0 < run["duration_s"] <= (ended - started).total_seconds() + 0.01
        for step in run["steps"]:
            assert set(step) == STEP_FIELDS
            assert step["attempts"] == 1
            assert step["duration_s"] > 0
    assert passed["result"] == "ok" and passed["failed_step"] is None
    assert [(s["number"], s["script"], s["result"], s["returncode"]) for s in passed["steps"]] == [
        (1, "one.py", "ok", 0),
        (2, "two_0.py", "ok", 0),
    ]
    assert passed["steps"][0]["argv"] == [passed["python"], "one.py", "--alpha", "1"]
    assert failed["result"] == "failed" and failed["failed_step"] == 2
    assert [(s["result"], s["returncode"]) for s in failed["steps"]] == [("ok", 0), ("failed", 3)]
    assert failed["run_id"] != passed["run_id"]

    text = run_lynx("history", cwd=tmp_path)

    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert "bad (foreground)  failed at step 2" in lines[0]
    assert lines[1].startswith("  Step 1 (one.py) ....") and " ok " in lines[1]
    assert lines[2].startswith("  Step 2 (two_3.py) ....") and lines[2].endswith("(exit code 3)")
    assert " failed " in lines[2]
    assert "good (foreground)  ok" in lines[3]
    assert len(lines) == 6


def test_a_run_prints_its_summary_on_the_screen_and_in_the_log(tmp_path: Path) -> None:
    two_step_config(tmp_path, 4)
    marker_step(tmp_path, "never.py")
    with (tmp_path / "config.yaml").open("a") as config:
        config.write("  - script: never.py\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", "lynx.log", cwd=tmp_path)

    assert result.returncode == 1
    lines = summary(result.stdout)
    # After the failure message, and the last thing the run says.
    assert result.stdout.index("Step 2 (two_4.py) failed with exit code 4.") < result.stdout.index("Run summary:")
    assert result.stdout.rstrip().endswith(lines[-1])
    assert len(lines) == 4  # the heading, the two steps that ran, the total: never.py did not run
    assert lines[1].startswith("  Step 1 (one.py) ...") and " ok " in lines[1]
    assert lines[2].startswith("  Step 2 (two_4.py) ...") and " failed " in lines[2]
    assert lines[2].endswith(" s  (exit code 4)")
    assert lines[3].startswith("  Total ...") and " failed " in lines[3] and lines[3].endswith(" s")
    # The result and duration columns line up.
    assert len({line.index(" ok ") if " ok " in line else line.index(" failed ") for line in lines[1:]}) == 1
    logged = (tmp_path / "lynx.log").read_text(encoding="utf-8").splitlines()
    assert [line.split(" - INFO - ", 1)[1] for line in logged[-4:]] == lines


def test_a_passing_run_ends_with_its_summary_after_the_usual_message(tmp_path: Path) -> None:
    two_step_config(tmp_path, 0)

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0
    lines = summary(result.stdout)
    assert result.stdout.index("All 2 steps completed successfully.") < result.stdout.index("Run summary:")
    assert [line.split()[:2] for line in lines[1:3]] == [["Step", "1"], ["Step", "2"]]
    assert lines[3].lstrip().startswith("Total ....")
    assert all(" ok " in line for line in lines[1:])


def test_an_interrupted_run_is_summarized_and_recorded(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    write_script(tmp_path, "sleeper.py", "import time\nopen('sleeping', 'w').close()\ntime.sleep(60)\n")
    write_config(tmp_path, "steps:\n  - script: one.py\n  - script: sleeper.py\n")
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", "config.yaml"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(),
    )
    try:
        wait_for(lambda: (tmp_path / "sleeping").exists(), timeout=30)
        lynx.send_signal(signal.SIGTERM)
        out, _ = lynx.communicate(timeout=30)
    finally:
        if lynx.poll() is None:
            lynx.kill()
            lynx.wait()

    stdout = out.decode()
    assert lynx.returncode == 128 + signal.SIGTERM
    lines = summary(stdout)
    assert " interrupted " in lines[-1]
    assert "Step 2 (sleeper.py) " in lines[2] and " interrupted " in lines[2]
    (run,) = history_json(tmp_path)
    assert run["result"] == "interrupted"
    assert [(s["result"], s["returncode"]) for s in run["steps"]] == [("ok", 0), ("interrupted", None)]


def test_reruns_from_the_dialog_count_as_attempts(tmp_path: Path) -> None:
    marker_step(tmp_path, "first.py")
    write_script(
        tmp_path,
        "flaky.py",
        """
        import os, sys
        count = int(open("count.txt").read()) + 1 if os.path.exists("count.txt") else 1
        open("count.txt", "w").write(str(count))
        sys.exit(1 if count == 1 else 0)
        """,
    )
    write_config(tmp_path, "steps:\n  - script: first.py\n  - script: flaky.py\n")
    child = pexpect.spawn(
        lynx_command()[0],
        [*lynx_command()[1:], "start", "-cf", "config.yaml"],
        cwd=str(tmp_path),
        env=clean_env(),
        encoding="utf-8",
        timeout=30,
        dimensions=(50, 200),
    )
    try:
        child.expect_exact("Do you want to rerun this step? (y/n)")
        child.sendline("y")
        child.expect_exact("Run summary:")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)

    assert child.exitstatus == 0
    (run,) = history_json(tmp_path)
    assert run["result"] == "ok"
    assert [(s["attempts"], s["result"]) for s in run["steps"]] == [(1, "ok"), (2, "ok")]
    assert "(2 attempts)" in run_lynx("history", cwd=tmp_path).stdout


# --- background runs --------------------------------------------------------------------------


def test_background_runs_are_recorded_under_the_scheduler_name(lynx_dir: Path) -> None:
    marker_step(lynx_dir, "step.py")
    write_config(lynx_dir, "cron:\n  second: '*'\nsteps:\n  - script: step.py\n", name="nightly.yaml")

    started = run_lynx("start", "-bg", "-cf", "nightly.yaml", "-lf", "x.log", cwd=lynx_dir)
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: len(history_json(lynx_dir)) >= 2, timeout=30)
    stopped = run_lynx("stop", "--yes", cwd=lynx_dir)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr

    runs = history_json(lynx_dir)
    assert all(run["name"] == "nightly" and run["result"] == "ok" for run in runs[1:])
    assert runs[0]["name"] == "nightly" and runs[0]["result"] in ("ok", "interrupted")
    assert runs[-1]["config_file"] == str(lynx_dir / "nightly.yaml")
    assert "Run summary:" in (lynx_dir / "x.log").read_text()
    assert history_json(lynx_dir, "--name", "nightly") == runs
    assert "nightly  ok" in run_lynx("history", "--name", "nightly", cwd=lynx_dir).stdout


def test_a_failing_background_run_is_recorded_as_failed(lynx_dir: Path) -> None:
    marker_step(lynx_dir, "ok.py")
    marker_step(lynx_dir, "fails.py", exit_code=2)
    write_config(lynx_dir, "cron:\n  second: '*'\nsteps:\n  - script: ok.py\n  - script: fails.py\n")

    started = run_lynx("start", "-bg", "--name", "hourly", "-cf", "config.yaml", "-lf", "x.log", cwd=lynx_dir)
    assert started.returncode == 0, started.stdout + started.stderr

    # Without --keep-running the failed run ends the schedule.
    wait_for(lambda: "The schedule has ended." in (lynx_dir / "x.log").read_text(), timeout=30)
    (run,) = history_json(lynx_dir)
    assert run["name"] == "hourly"
    assert run["result"] == "failed" and run["failed_step"] == 2
    assert [(s["script"], s["result"], s["returncode"]) for s in run["steps"]] == [
        ("ok.py", "ok", 0),
        ("fails.py", "failed", 2),
    ]


# --- the file ---------------------------------------------------------------------------------


def test_a_truncated_last_line_is_skipped_and_does_not_swallow_the_next_run(tmp_path: Path) -> None:
    two_step_config(tmp_path, 0)
    assert run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path).returncode == 0
    path = tmp_path / HISTORY
    whole = path.read_bytes()
    # What a Lynx killed in the middle of writing would leave: half a line, no newline.
    path.write_bytes(whole + whole[: len(whole) // 2])

    assert len(history_json(tmp_path)) == 1
    assert run_lynx("history", cwd=tmp_path).returncode == 0

    assert run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path).returncode == 0
    runs = history_json(tmp_path)
    assert len(runs) == 2
    assert runs[0]["run_id"] != runs[1]["run_id"]


def test_a_directory_where_lynx_cannot_write_warns_once_and_the_runs_go_on(tmp_path: Path) -> None:
    # Root writes into read-only directories, so make .lynx/ impossible for anyone: a regular file.
    (tmp_path / ".lynx").write_text("not a directory")
    marker_step(tmp_path, "step.py")
    end = (datetime.now() + timedelta(seconds=3)).strftime("%Y-%m-%d %H:%M:%S")
    write_config(tmp_path, f"cron:\n  second: '*'\n  end_date: '{end}'\nsteps:\n  - script: step.py\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(ran(tmp_path)) >= 2
    assert result.stdout.count(WARNING) == 1
    assert "the runs go on without it" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    shown = run_lynx("history", cwd=tmp_path)
    assert shown.returncode == 1
    assert shown.stderr.strip() == "Error: cannot read the run history .lynx/runs.jsonl: Not a directory"


def test_the_history_is_rotated_past_its_size(tmp_path: Path) -> None:
    two_step_config(tmp_path, 0)
    env = clean_env(LYNX_HISTORY_MAX_BYTES="2000")
    for _ in range(5):
        assert run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path, env=env).returncode == 0

    path = tmp_path / HISTORY
    backup = path.with_name("runs.jsonl.1")
    assert backup.exists()
    assert not path.with_name("runs.jsonl.2").exists()
    for file in (path, backup):
        assert file.stat().st_size <= 2000
    kept = history_json(tmp_path, "-n", "0")
    assert 2 <= len(kept) < 5
    assert kept[0]["started_at"] > kept[-1]["started_at"]


# --- lynx history -----------------------------------------------------------------------------


def test_history_n_and_name_choose_the_runs(tmp_path: Path) -> None:
    two_step_config(tmp_path, 0, "alpha.yaml")
    two_step_config(tmp_path, 0, "beta.yaml")
    for config in ("alpha.yaml", "beta.yaml", "alpha.yaml"):
        assert run_lynx("start", "-ni", "-cf", config, cwd=tmp_path).returncode == 0

    assert len(history_json(tmp_path)) == 3
    (newest,) = history_json(tmp_path, "-n", "1")
    assert newest["config_file"].endswith("alpha.yaml")
    assert [run["config_file"][-10:] for run in history_json(tmp_path, "--name", "beta")] == ["/beta.yaml"]
    assert len(history_json(tmp_path, "--name", "alpha")) == 2
    assert history_json(tmp_path, "--name", "gamma") == []
    text = run_lynx("history", "-n", "2", cwd=tmp_path).stdout
    assert [line.split("  ")[1] for line in text.splitlines() if not line.startswith(" ")] == [
        "alpha (foreground)",
        "beta (foreground)",
    ]


def test_history_without_runs_says_how_to_get_some(tmp_path: Path) -> None:
    result = run_lynx("history", cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout == "No runs recorded in .lynx/runs.jsonl yet; 'lynx start' records each run there.\n"
    assert history_json(tmp_path) == []


def test_history_reads_a_long_file_from_its_end(tmp_path: Path) -> None:
    """64 GiB of history before the last 30 runs (a sparse file: no disk used): reading it whole would
    take minutes and all the memory; from the end, the newest runs come at once."""
    two_step_config(tmp_path, 0)
    assert run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path).returncode == 0
    path = tmp_path / HISTORY
    line = path.read_bytes()
    with path.open("wb") as handle:
        handle.truncate(64 * 1024**3)
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n" + line * 30)

    assert len(history_json(tmp_path, "-n", "20")) == 20
    assert "config (foreground)" in run_lynx("history", cwd=tmp_path).stdout


def test_a_history_with_gigabytes_without_a_line_break_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 14 #4: a 'line' of 2 GiB (a sparse run of NULs) between two runs is skipped, not held in memory."""
    two_step_config(tmp_path, 0)
    for _ in range(2):
        assert run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path).returncode == 0
    path = tmp_path / HISTORY
    first, second = path.read_bytes().splitlines(keepends=True)
    with path.open("wb") as handle:
        handle.write(first)
        handle.truncate(len(first) + 2 * 1024**3)
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n" + second)

    for name in ([], ["--name", "config"]):
        command = [*lynx_command(), "history", "--json", "-n", "0", *name]
        measured = subprocess.run(
            ["prlimit", "--as=1073741824", "--", *command], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert measured.returncode == 0, measured.stderr
        assert [run["run_id"] for run in json.loads(measured.stdout)] == [
            json.loads(line)["run_id"] for line in (second, first)
        ]


def test_history_name_finds_a_schedulers_runs_among_many_others(tmp_path: Path) -> None:
    """--name looks for its runs block by block; a run across a block boundary is found too."""
    two_step_config(tmp_path, 0, "alpha.yaml")
    two_step_config(tmp_path, 0, "beta.yaml")
    for config in ("alpha.yaml", "beta.yaml"):
        assert run_lynx("start", "-ni", "-cf", config, cwd=tmp_path).returncode == 0
    path = tmp_path / HISTORY
    beta, alpha = path.read_bytes().splitlines(keepends=True)[::-1]
    # 40 alpha runs among 40,000 beta runs (several MB, many read blocks), at odd places.
    lines = [beta] * 40_000
    for index in range(40):
        lines[index * 997 + 13] = alpha
    path.write_bytes(b"".join(lines))

    assert len(history_json(tmp_path, "--name", "alpha", "-n", "0")) == 40
    assert len(history_json(tmp_path, "--name", "beta", "-n", "0")) == 40_000 - 40
    assert history_json(tmp_path, "--name", "gamma", "-n", "0") == []


@pytest.mark.parametrize("bad", ["-1", "x"])
def test_history_refuses_a_bad_count(tmp_path: Path, bad: str) -> None:
    result = run_lynx("history", "-n", bad, cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_arguments_of_any_text_are_recorded_exactly(tmp_path: Path) -> None:
    marker_step(tmp_path, "one.py")
    # In YAML single quotes a backslash is itself; then the shell-like split reads the quotes.
    config = 'steps:\n  - script: one.py\n    arguments:\n      - \'"é \\\\ \\" 😀" "tab\there"\'\n'
    (tmp_path / "config.yaml").write_text(config, encoding="utf-8")

    assert run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path).returncode == 0

    (run,) = history_json(tmp_path)
    assert run["steps"][0]["argv"][1:] == ["one.py", 'é \\ " 😀', "tab\there"]
    assert ran(tmp_path) == ['one.py é \\ " 😀 tab\there']


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, False, 'é\n"\\ \x01 \udcff 😀'], "b": {}, "c": [], "d": 10**20},
        [0.1 + 0.2, -0.0, 1e300, "", "\u2028"],
    ],
)
def test_history_lines_are_the_json_the_json_module_writes(value: Any) -> None:
    from lynx.history import to_json

    assert to_json(value) == json.dumps(value, separators=(",", ":"))
    assert json.loads(to_json(value)) == value


def test_retries_timeouts_and_continue_on_error_reach_the_summary_and_the_history(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "flaky.py",
        """
        import os, sys
        count = int(open("count.txt").read()) + 1 if os.path.exists("count.txt") else 1
        open("count.txt", "w").write(str(count))
        sys.exit(1 if count == 1 else 0)
        """,
    )
    write_script(tmp_path, "hangs.py", "import time\ntime.sleep(60)\n")
    marker_step(tmp_path, "last.py")
    write_config(
        tmp_path,
        """
        steps:
          - script: flaky.py
            retries: 1
          - script: hangs.py
            name: hang
            timeout: 1
            continue_on_error: true
          - script: last.py
        """,
    )

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 1
    lines = summary(result.stdout)
    assert lines[1].startswith("  Step 1 (flaky.py) ...") and lines[1].endswith("(2 attempts)") and " ok " in lines[1]
    assert lines[2].startswith("  Step 2 (hang) ...") and lines[2].endswith("(timed out)") and " failed " in lines[2]
    assert lines[3].startswith("  Step 3 (last.py) ...") and " ok " in lines[3]
    assert " failed " in lines[4]
    (run,) = history_json(tmp_path)
    assert run["result"] == "failed" and run["failed_step"] == 2
    assert [(s["name"], s["attempts"], s["result"], s.get("timed_out", False)) for s in run["steps"]] == [
        (None, 2, "ok", False),
        ("hang", 1, "failed", True),
        (None, 1, "ok", False),
    ]
    assert run["steps"][0]["returncode"] == 0
    assert "Step 2 (hang) " in run_lynx("history", cwd=tmp_path).stdout


def test_lines_that_parse_but_are_no_runs_are_skipped(tmp_path: Path) -> None:
    """Issue 14 #6: a line that is JSON but no run (a wrong type, a nest 100,000 deep, a number too large
    for a float, NaN) is skipped like one that does not parse: no RecursionError, OverflowError or ValueError."""
    two_step_config(tmp_path, 0)
    assert run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path).returncode == 0
    path = tmp_path / HISTORY
    (real,) = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    odd = ["[1, 2]", '"text"', "{}", '{"steps": 5, "started_at": 3, "duration_s": "x"}']
    odd += ['{"steps": [1, {}]}', "\x00\xff", "[" * 100_000, "{" * 50_000]
    for key, value in [("duration_s", "1e400"), ("duration_s", "NaN"), ("duration_s", "-Infinity")]:
        odd.append(json.dumps({**real, "run_id": "odd"}).replace(f'"{key}": {real[key]}', f'"{key}": {value}', 1))
    odd.append(json.dumps({**real, "run_id": "odd", "started_at": "yesterday"}))
    odd.append(json.dumps({**real, "run_id": "odd", "result": None}))
    odd.append(json.dumps({**real, "run_id": "odd", "steps": [{**real["steps"][0], "duration_s": -1}]}))
    odd.append(json.dumps({**real, "run_id": "odd", "steps": [{**real["steps"][0], "argv": [1]}]}))
    odd.append(json.dumps({**real, "run_id": "odd", "failed_step": "2"}))
    odd.append(json.dumps({**real, "run_id": "odd", "config_file": ["a"]}))
    odd.append(json.dumps({**real, "run_id": "odd", "name": 5}))
    with path.open("a", encoding="utf-8") as history:
        history.write("\n".join(odd) + "\n")
    assert sum(line.count("1e400") + line.count("NaN") + line.count("Infinity") for line in odd) == 3

    for name in ([], ["--name", "config"]):
        result = run_lynx("history", "-n", "0", *name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout.count("config (foreground)  ok") == 1, result.stdout
        assert [run["run_id"] for run in history_json(tmp_path, "-n", "0", *name)] == [real["run_id"]]


def test_a_run_from_a_later_lynx_with_keys_this_one_does_not_know_is_shown(tmp_path: Path) -> None:
    two_step_config(tmp_path, 0)
    assert run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path).returncode == 0
    path = tmp_path / HISTORY
    real = json.loads(path.read_text(encoding="utf-8"))
    later = {**real, "run_id": "later", "result": "lost", "last_alive_at": real["ended_at"], "notified": ["x"]}
    later["steps"] = [{**real["steps"][0], "signal": "SIGKILL"}]
    with path.open("a", encoding="utf-8") as history:
        history.write(json.dumps(later) + "\n")

    assert [run["run_id"] for run in history_json(tmp_path)] == ["later", real["run_id"]]
    assert "config (foreground)  lost" in run_lynx("history", cwd=tmp_path).stdout


def test_runs_finishing_together_never_mix_their_lines_also_while_rotating(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, "steps:\n  - script: step.py\n")
    env = clean_env(LYNX_HISTORY_MAX_BYTES="3000")
    runs = [
        subprocess.Popen(
            [*lynx_command(), "start", "-ni", "-cf", "config.yaml"],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(12)
    ]
    for run in runs:
        assert run.wait(timeout=60) == 0

    assert len(ran(tmp_path)) == 12
    lines = []
    for name in ("runs.jsonl", "runs.jsonl.1"):
        lines += (tmp_path / ".lynx" / name).read_text(encoding="utf-8").splitlines()
    assert lines and all(json.loads(line)["result"] == "ok" for line in lines)
    assert not (tmp_path / ".lynx" / "runs.jsonl.2").exists()


def test_an_argument_read_from_the_environment_is_recorded_as_the_file_wrote_it(tmp_path: Path) -> None:
    """History records travel (notifications carry them): a token from ${oc.env:...} must not be in them."""
    marker_step(tmp_path, "deploy.py")
    write_config(tmp_path, 'steps:\n  - script: deploy.py\n    arguments: ["--token ${oc.env:LYNX_TEST_TOKEN}"]\n')

    result = run_lynx(
        "start", "-ni", "-cf", "config.yaml", cwd=tmp_path, env=clean_env(LYNX_TEST_TOKEN="hunter2-secret")
    )

    assert result.returncode == 0, result.stderr
    assert ran(tmp_path) == ["deploy.py --token hunter2-secret"]
    history = (tmp_path / HISTORY).read_text(encoding="utf-8")
    assert "hunter2-secret" not in history
    assert json.loads(history)["steps"][0]["argv"][-2:] == ["--token", "${oc.env:LYNX_TEST_TOKEN}"]
