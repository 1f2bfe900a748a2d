"""Issue 10's step keys through the real ``lynx start``: name, env, cwd, timeout, retries,
continue_on_error, mapping arguments, non-.py scripts, python, named configs entries, vars."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config, write_script

PY = sys.executable


def start(directory: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_lynx("start", "-cf", "config.yaml", "-ni", *args, cwd=directory, env=env, timeout=120)


def spawn(directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``lynx start -ni`` in the background, its output going to a file the test can poll."""
    output = directory / "output.txt"
    with open(output, "wb") as handle:
        process = subprocess.Popen(
            [*lynx_command(), "start", "-cf", "config.yaml", "-ni"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    return process, output


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def assert_one_error(result: subprocess.CompletedProcess[str], directory: Path, *words: str) -> None:
    """Exit 2, stderr one ``Error:`` line with ``words``, and nothing ran."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert "Processing Step" not in result.stdout
    assert ran(directory) == []


# --- name ----------------------------------------------------------------------------------------


def test_a_named_step_is_called_by_its_name_in_progress_and_failure_lines(tmp_path: Path) -> None:
    marker_step(tmp_path, "prep.py")
    marker_step(tmp_path, "train.py", exit_code=3)
    write_config(tmp_path, "steps:\n  - script: prep.py\n  - script: train.py\n    name: train\n")

    result = start(tmp_path)

    assert result.returncode == 1
    assert "Processing Step 1: prep.py...\n" in result.stdout
    assert "Processing Step 2: train...\n" in result.stdout
    assert "Step 2 (train) failed with exit code 3." in result.stdout


# --- env and cwd ---------------------------------------------------------------------------------


def test_env_and_cwd_reach_the_step(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    write_script(
        tmp_path,
        "show.py",
        f"""
        import json, os
        with open({str(tmp_path / "seen.json")!r}, "w") as handle:
            env = {{k: os.environ.get(k) for k in ("GPU", "N", "RATE", "GONE")}}
            json.dump({{"cwd": os.getcwd(), "env": env}}, handle)
        """,
    )
    write_config(
        tmp_path,
        """
        steps:
          - script: show.py
            cwd: models
            env:
              GPU: "1"
              N: 010
              RATE: 3.10
              GONE: null
        """,
    )

    result = start(tmp_path, env=clean_env(GONE="here"))

    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["cwd"] == str((tmp_path / "models").resolve())
    # Numbers as the file wrote them, not as YAML 1.1 reads them (8, 3.1).
    assert seen["env"] == {"GPU": "1", "N": "010", "RATE": "3.10", "GONE": None}


def test_a_relative_cwd_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf" / "work").mkdir(parents=True)
    write_script(tmp_path, "where.py", f"import os\nopen({str(tmp_path / 'cwd.txt')!r}, 'w').write(os.getcwd())\n")
    write_config(tmp_path / "conf", "steps:\n  - script: where.py\n    cwd: work\n")

    result = run_lynx("start", "-cf", "conf/config.yaml", "-ni", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "cwd.txt").read_text() == str((tmp_path / "conf" / "work").resolve())


# --- timeout -------------------------------------------------------------------------------------


def test_a_timeout_ends_a_sleeping_step_and_its_child(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "hang.py",
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open({str(tmp_path / "child.pid")!r}, "w").write(str(child.pid))
        print("hanging", flush=True)
        time.sleep(300)
        """,
    )
    marker_step(tmp_path, "after.py")
    write_config(tmp_path, "steps:\n  - script: hang.py\n    timeout: 2\n  - script: after.py\n")

    began = time.monotonic()
    result = start(tmp_path)
    took = time.monotonic() - began

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Step 1 (hang.py) timed out after 2 s and was ended." in result.stdout
    assert ran(tmp_path) == []  # -ni: the failure ends the run
    # The timeout plus the 5 s grace (the step dies of SIGTERM at once) plus a busy machine's start-up.
    assert took < 2 + 5 + 10
    child = int((tmp_path / "child.pid").read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


# --- retries -------------------------------------------------------------------------------------

FLAKY = """
import sys
from pathlib import Path
count = Path("count.txt")
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
with open("times.txt", "a") as handle:
    handle.write(f"{{__import__('time').monotonic()}}\\n")
sys.exit(0 if n >= {succeed_at} else 4)
"""


def test_retries_rerun_a_flaky_step_until_it_passes(tmp_path: Path) -> None:
    write_script(tmp_path, "flaky.py", FLAKY.format(succeed_at=2))
    marker_step(tmp_path, "after.py")
    write_config(tmp_path, "steps:\n  - script: flaky.py\n    retries: 3\n  - script: after.py\n")

    result = start(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "count.txt").read_text() == "2"
    assert "Processing Step 1: flaky.py (attempt 1 of 4)..." in result.stdout
    assert "Processing Step 1: flaky.py (attempt 2 of 4)..." in result.stdout
    assert "attempt 3 of 4" not in result.stdout
    assert ran(tmp_path) == ["after.py"]


def test_retries_stop_at_the_limit_and_honour_the_delay_and_backoff(tmp_path: Path) -> None:
    write_script(tmp_path, "flaky.py", FLAKY.format(succeed_at=99))
    marker_step(tmp_path, "after.py")
    write_config(
        tmp_path,
        "steps:\n  - script: flaky.py\n    retries: 2\n    retry_delay: 0.5\n    retry_backoff: 3\n"
        "  - script: after.py\n",
    )

    result = start(tmp_path)

    assert result.returncode == 1
    assert (tmp_path / "count.txt").read_text() == "3"
    assert "Retrying Step 1 (flaky.py) in 0.5 s (attempt 2 of 3)." in result.stdout
    assert "Retrying Step 1 (flaky.py) in 1.5 s (attempt 3 of 3)." in result.stdout
    times = [float(line) for line in (tmp_path / "times.txt").read_text().split()]
    assert times[1] - times[0] >= 0.5
    assert times[2] - times[1] >= 1.5
    assert ran(tmp_path) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_retry_wait_ends_it_at_once(tmp_path: Path, signum: int, code: int) -> None:
    write_script(tmp_path, "flaky.py", FLAKY.format(succeed_at=99))
    write_config(tmp_path, "steps:\n  - script: flaky.py\n    retries: 1\n    retry_delay: 300\n")
    process, output = spawn(tmp_path)
    try:
        wait_for(lambda: "Retrying Step 1" in text_of(output), timeout=60)
        sent = time.monotonic()
        process.send_signal(signum)
        assert process.wait(timeout=30) == code
        assert time.monotonic() - sent < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "count.txt").read_text() == "1"


def test_retries_come_before_the_dialog(tmp_path: Path) -> None:
    write_script(tmp_path, "flaky.py", FLAKY.format(succeed_at=99))
    write_config(tmp_path, "steps:\n  - script: flaky.py\n    retries: 1\n")

    result = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path, input="n\nn\n")

    assert result.returncode == 1
    assert (tmp_path / "count.txt").read_text() == "2"
    assert result.stdout.index("attempt 2 of 2") < result.stdout.index("Do you want to rerun this step?")


# --- continue_on_error ---------------------------------------------------------------------------


def test_continue_on_error_runs_the_next_step_and_still_exits_1(tmp_path: Path) -> None:
    marker_step(tmp_path, "bad.py", exit_code=5)
    marker_step(tmp_path, "good.py")
    write_config(tmp_path, "steps:\n  - script: bad.py\n    continue_on_error: true\n  - script: good.py\n")

    result = start(tmp_path)

    assert result.returncode == 1
    assert ran(tmp_path) == ["bad.py", "good.py"]
    assert "Step 1 (bad.py) failed with exit code 5." in result.stdout
    assert "All 2 steps completed successfully." not in result.stdout
    assert "The run failed: Step 1 (bad.py) failed (continue_on_error let it go on)." in result.stdout
    assert "failed" in result.stdout.strip().splitlines()[-1]  # the summary's total


# --- arguments as a mapping ----------------------------------------------------------------------


def test_mapping_arguments_reach_a_fire_script_with_the_right_types(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "fired.py",
        f"""
        import json, sys
        import fire

        def main(input_file, nr_images, filters, rate, version, verbose=False):
            values = [input_file, nr_images, filters, rate, version, verbose]
            with open({str(tmp_path / "types.json")!r}, "w") as handle:
                types = [type(v).__name__ for v in values]
                json.dump({{"argv": sys.argv[1:], "values": values, "types": types}}, handle)

        fire.Fire(main)
        """,
    )
    write_config(
        tmp_path,
        """
        steps:
          - script: fired.py
            arguments: {input_file: data/x, nr_images: 500, filters: true, rate: 0.5, version: "3.10", verbose: null}
        """,
    )

    result = start(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads((tmp_path / "types.json").read_text())
    assert seen["argv"] == [
        "--input_file", "data/x", "--nr_images", "500", "--filters", "True", "--rate", "0.5",
        "--version", "3.10", "--verbose",
    ]  # fmt: skip
    assert seen["types"] == ["str", "int", "bool", "float", "float", "bool"]
    assert seen["values"][:3] == ["data/x", 500, True]


def test_mapping_keys_that_already_have_dashes_are_passed_as_written(tmp_path: Path) -> None:
    marker_step(tmp_path, "a.py")
    write_config(
        tmp_path,
        """
        steps:
          - script: a.py
            arguments: {"--foo": 1, "-v": null, plain: x, "--": null, "-n": "3.10"}
        """,
    )

    result = start(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == ["a.py --foo 1 -v --plain x -- -n 3.10"]


def test_numbers_in_list_arguments_keep_their_source_text(tmp_path: Path) -> None:
    marker_step(tmp_path, "a.py")
    write_config(tmp_path, "steps:\n  - script: a.py\n    arguments: [3.10, 010, 0x1F, '12:30', 12:30, 1e3]\n")

    result = start(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == ["a.py 3.10 010 0x1F 12:30 12:30 1e3"]


# --- scripts that are not .py files, and the python key -------------------------------------------


def test_a_shell_script_step_runs_directly(tmp_path: Path) -> None:
    script = write_script(tmp_path, "tasks/run.sh", f'#!/bin/sh\necho "shell got $1" > {tmp_path / "shell.txt"}\n')
    script.chmod(0o755)
    write_config(tmp_path, "steps:\n  - script: tasks/run.sh\n    arguments: [hello]\n")

    result = start(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "shell.txt").read_text() == "shell got hello\n"


def test_a_python_per_step_and_at_the_top_level(tmp_path: Path) -> None:
    # A wrapper that records it was used, then runs the real interpreter.
    wrapper = write_script(
        tmp_path, "bin/mypython", f'#!/bin/sh\necho used >> {tmp_path / "wrapper.txt"}\nexec {PY} "$@"\n'
    )
    wrapper.chmod(0o755)
    marker_step(tmp_path, "a.py")
    marker_step(tmp_path, "b.py")
    write_config(tmp_path, f"python: bin/mypython\nsteps:\n  - script: a.py\n  - script: b.py\n    python: {PY}\n")

    result = start(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == ["a.py", "b.py"]
    assert (tmp_path / "wrapper.txt").read_text() == "used\n"


def test_a_python_found_on_path(tmp_path: Path) -> None:
    wrapper = write_script(
        tmp_path, "bin/py-on-path", f'#!/bin/sh\necho used > {tmp_path / "wrapper.txt"}\nexec {PY} "$@"\n'
    )
    wrapper.chmod(0o755)
    marker_step(tmp_path, "a.py")
    write_config(tmp_path, "steps:\n  - script: a.py\n    python: py-on-path\n")

    result = start(tmp_path, env=clean_env(PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "wrapper.txt").exists()


# --- steps named after configs entries -----------------------------------------------------------


@pytest.mark.parametrize(
    "configs",
    [
        "configs:\n  - prep: &prep\n      - script: a.py\n        arguments: [--x 1]\n  - train:\n      script: b.py\n",
        "configs:\n  prep:\n    script: a.py\n    arguments: [--x 1]\n  train: [{script: b.py}]\n",
    ],
    ids=["readme-list", "mapping"],
)
def test_steps_may_name_configs_entries(tmp_path: Path, configs: str) -> None:
    marker_step(tmp_path, "a.py")
    marker_step(tmp_path, "b.py")
    write_config(tmp_path, configs + "steps: [prep, train, prep]\n")

    result = start(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == ["a.py --x 1", "b.py", "a.py --x 1"]
    assert "Processing Step 3: a.py..." in result.stdout


# --- interpolation ---------------------------------------------------------------------------------


def test_vars_and_environment_interpolate_in_steps_and_cron(tmp_path: Path) -> None:
    marker_step(tmp_path, "a.py")
    write_config(
        tmp_path,
        """
        vars:
          data: data/train
          tries: 2
        steps:
          - script: a.py
            name: ${vars.data}
            retries: ${vars.tries}
            arguments: {input: "${oc.env:DATA_DIR,fallback}", other: "${vars.data}"}
        """,
    )

    result = start(tmp_path, env=clean_env(DATA_DIR="/mnt/data"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == ["a.py --input /mnt/data --other data/train"]
    assert "Processing Step 1: data/train (attempt 1 of 3)..." in result.stdout


# --- bad values: exit 2, one line, nothing ran -----------------------------------------------------

BAD_STEPS = {
    "name-list": ("name: [a]", ["'name'", "one line of text, not a list"]),
    "name-empty": ('name: ""', ["'name' is empty"]),
    "name-blank": ("name: '  '", ["'name' is empty"]),
    "name-newline": ('name: "prep\\nfast"', ["'name' must be one line of text", "line break"]),
    "name-block": ("name: >\n      prep\n", ["'name' must be one line of text", "line break", "write |- or >-"]),
    "env-list": ("env: [A=1]", ["'env'", "mapping"]),
    "env-bool": ("env: {A: true}", ["'env'", "A", "quote"]),
    "env-nested": ("env: {A: {b: 1}}", ["'env'", "A"]),
    "cwd-missing": ("cwd: nowhere", ["'cwd'", "nowhere", "not a directory"]),
    "cwd-number": ("cwd: [x]", ["'cwd'"]),
    "timeout-zero": ("timeout: 0", ["'timeout'", "more than 0"]),
    "timeout-negative": ("timeout: -5", ["'timeout'"]),
    "timeout-text": ("timeout: 10s", ["'timeout'", "'10s'"]),
    "timeout-bool": ("timeout: true", ["'timeout'"]),
    "retries-negative": ("retries: -1", ["'retries'"]),
    "retries-float": ("retries: 1.5", ["'retries'"]),
    "retry-delay-negative": ("retry_delay: -1", ["'retry_delay'"]),
    "retry-backoff-zero": ("retry_backoff: 0", ["'retry_backoff'"]),
    "continue-on-error-text": ("continue_on_error: maybe", ["'continue_on_error'", "true or false"]),
    "arguments-mapping-list-value": ("arguments: {a: [1, 2]}", ["'arguments'", "'a'"]),
    "python-missing": ("python: no-such-python-here", ["'python'", "PATH"]),
    "python-not-a-file": ("python: ./nowhere/python", ["'python'", "not an executable"]),
    "unknown-key": ("timout: 5", ["unknown key 'timout'", "did you mean 'timeout'"]),
}


@pytest.mark.parametrize("name", list(BAD_STEPS))
def test_a_bad_value_of_a_step_key_is_refused(tmp_path: Path, name: str) -> None:
    line, words = BAD_STEPS[name]
    marker_step(tmp_path, "first.py")
    marker_step(tmp_path, "second.py")
    write_config(tmp_path, f"steps:\n  - script: first.py\n  - script: second.py\n    {line}\n")

    result = start(tmp_path)

    assert_one_error(result, tmp_path, "config.yaml: step 2 (second.py): ", *words)


def test_a_script_that_is_not_executable_is_refused_up_front(tmp_path: Path) -> None:
    marker_step(tmp_path, "first.py")
    write_script(tmp_path, "run.sh", "#!/bin/sh\necho hi\n").chmod(0o644)
    write_config(tmp_path, "steps:\n  - script: first.py\n  - script: run.sh\n")

    result = start(tmp_path)

    assert_one_error(result, tmp_path, "step 2 (run.sh)", "not executable", "chmod +x")


def test_an_unknown_step_name_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    marker_step(tmp_path, "first.py")
    write_config(
        tmp_path, "configs:\n  - prep: {script: first.py}\n  - train: {script: first.py}\nsteps: [prep, tran]\n"
    )

    result = start(tmp_path)

    assert_one_error(result, tmp_path, "step 2", "'tran'", "prep, train")


def test_an_unresolvable_interpolation_names_the_key(tmp_path: Path) -> None:
    marker_step(tmp_path, "first.py")
    write_config(tmp_path, "steps:\n  - script: first.py\n  - script: first.py\n    env: {A: '${vars.nope}'}\n")

    result = start(tmp_path)

    assert_one_error(result, tmp_path, "step 2 (first.py): env.A", "interpolation")


def test_vars_must_be_a_mapping(tmp_path: Path) -> None:
    marker_step(tmp_path, "first.py")
    write_config(tmp_path, "vars: [1, 2]\nsteps:\n  - script: first.py\n")

    assert_one_error(start(tmp_path), tmp_path, "'vars'", "mapping")


def test_a_timed_out_attempt_is_retried_and_continue_on_error_skips_the_dialog(tmp_path: Path) -> None:
    write_script(tmp_path, "hang.py", "import time\nprint('attempt', flush=True)\ntime.sleep(300)\n")
    marker_step(tmp_path, "after.py")
    write_config(
        tmp_path,
        "steps:\n  - script: hang.py\n    timeout: 1\n    retries: 1\n    continue_on_error: true\n"
        "  - script: after.py\n",
    )

    # Interactive, with no answers on stdin: a dialog would end the run before after.py.
    result = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path, input="")

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("Step 1 (hang.py) timed out after 1 s and was ended.") == 2
    assert "Retrying Step 1 (hang.py) now (attempt 2 of 2)." in result.stdout
    assert "Do you want to rerun" not in result.stdout
    assert ran(tmp_path) == ["after.py"]
