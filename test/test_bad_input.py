"""Bad input through the real ``lynx`` command: exit 2, one ``Error:`` line naming what is wrong, nothing runs."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pexpect
import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, write_config

PROMPT = "The configuration file does not exist. Please enter the path to the configuration file."
VALID = """
steps:
  - script: first.py
  - script: second.py
    arguments: ["--x 1"]
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory with two marker steps; any config below that runs them leaves a trace in ran.txt."""
    marker_step(tmp_path, "first.py")
    marker_step(tmp_path, "second.py")
    return tmp_path


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error: ...`` line on stderr (fails the test unless there is exactly one)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, f"expected one 'Error: ' line, got stderr:\n{result.stderr}"
    return lines[0]


def assert_refused(result: subprocess.CompletedProcess[str], directory: Path, *words: str) -> str:
    """Exit 2, one Error line containing ``words``, no traceback, and no step ran."""
    assert result.returncode == 2, result.stdout + result.stderr
    line = error_line(result)
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert "Traceback" not in result.stdout + result.stderr
    assert "Processing Step" not in result.stdout
    assert ran(directory) == []
    return line


def assert_config_refused(result: subprocess.CompletedProcess[str], directory: Path, *words: str) -> None:
    """As assert_refused, and the whole of stderr is that one line (no usage text, no second line)."""
    line = assert_refused(result, directory, *words)
    assert result.stderr.strip().splitlines() == [line]


# Each config has valid marker steps around the fault: if validation came after the first step, they would run.
BAD_CONFIGS = {
    "yaml-syntax": (
        "steps:\n  - script: first.py\n  - script: second.py\n    arguments: a: b\n",
        ["invalid YAML", "line 4"],
    ),
    "yaml-tab": ("steps:\n  - script: first.py\n\targuments: [x]\n", ["invalid YAML", "line 3"]),
    "empty-file": ("", ["empty"]),
    "only-comments": ("# nothing here\n", ["empty"]),
    "top-level-list": ("- script: first.py\n- script: second.py\n", ["mapping", "list"]),
    "top-level-scalar": ("first.py\n", ["mapping", "string"]),
    "missing-steps": ("configs:\n  - a: &a {script: first.py}\n", ["'steps' is missing"]),
    "steps-null": ("steps:\n", ["'steps' is missing"]),
    "empty-steps": ("steps: []\n", ["'steps' is empty"]),
    "steps-not-a-list": ("steps:\n  script: first.py\n", ["'steps'", "list"]),
    "step-not-a-mapping": ("steps:\n  - script: first.py\n  - second.py\n", ["step 2", "mapping"]),
    "step-without-script": (
        "steps:\n  - script: first.py\n  - arguments: [--x]\n  - script: second.py\n",
        ["step 2", "'script' is missing"],
    ),
    "script-not-a-string": ("steps:\n  - script: first.py\n  - script: [a, b]\n", ["step 2", "'script'"]),
    "unknown-step-key": (
        "steps:\n  - script: first.py\n  - script: second.py\n  - script: first.py\n    argument: [--x 1]\n",
        ["step 3 (first.py)", "unknown key 'argument'", "did you mean 'arguments'"],
    ),
    "unknown-top-level-key": (
        "crons:\n  second: '*/2'\nsteps:\n  - script: first.py\n",
        ["unknown key 'crons'", "did you mean 'cron'"],
    ),
    "arguments-not-a-list": (
        "steps:\n  - script: first.py\n  - script: second.py\n    arguments: --x 1\n",
        ["step 2 (second.py)", "'arguments'", "list"],
    ),
    "argument-entry-is-a-mapping": (
        "steps:\n  - script: first.py\n  - script: second.py\n    arguments: [--x, {a: 1}]\n",
        ["step 2 (second.py)", "'arguments' entry 2", "mapping"],
    ),
    "argument-entry-is-a-list": (
        "steps:\n  - script: first.py\n    arguments: [[--x, 1]]\n",
        ["step 1 (first.py)", "'arguments' entry 1", "list"],
    ),
    "unbalanced-quote": (
        'steps:\n  - script: first.py\n  - script: second.py\n    arguments: ["--title \'two words"]\n',
        ["step 2 (second.py)", "'arguments'", "quotation"],
    ),
    "script-not-found": (
        "steps:\n  - script: first.py\n  - script: second.py\n  - script: tasks/missing.py\n",
        ["step 3 (tasks/missing.py)", "not found"],
    ),
    "unknown-cron-field": (
        "cron:\n  secnd: '*/2'\nsteps:\n  - script: first.py\n",
        ["cron", "'secnd'", "did you mean 'second'"],
    ),
    "bad-cron-second": ("cron:\n  second: '*/99'\nsteps:\n  - script: first.py\n", ["cron", "second", "99"]),
    "bad-cron-hour": ("cron:\n  hour: 25\nsteps:\n  - script: first.py\n", ["cron", "hour", "25"]),
    "bad-cron-day-of-week": ("cron:\n  day_of_week: funday\nsteps:\n  - script: first.py\n", ["cron", "funday"]),
    "bad-cron-timezone": ("cron:\n  timezone: Mars/Olympus\nsteps:\n  - script: first.py\n", ["cron", "Mars"]),
    "cron-not-a-mapping": ("cron: '*/10 * * * *'\nsteps:\n  - script: first.py\n", ["cron", "mapping"]),
    "recursive-alias": ("steps:\n  - script: first.py\n    arguments: &a [*a]\n", ["alias"]),
    "recursive-alias-top": ("configs: &a [*a]\nsteps:\n  - script: first.py\n", ["alias"]),
    "undefined-alias": (
        "steps:\n  - <<: *nowhere\n  - script: first.py\n",
        ["invalid YAML", "line 2", "undefined alias"],
    ),
    "merge-of-a-scalar": (
        "configs:\n  - &s first.py\nsteps:\n  - <<: *s\n  - script: second.py\n",
        ["invalid YAML", "merging"],
    ),
    "missing-interpolation": (
        "steps:\n  - script: first.py\n    arguments: ['${configs.nope}']\n",
        ["interpolation"],
    ),
    "yaml-bomb": (
        "configs:\n  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"  - &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi"))
        + "steps:\n  - script: first.py\n    arguments: *i\n",
        ["alias"],
    ),
}


@pytest.mark.parametrize("mode", [["-ni"], []], ids=["non-interactive", "interactive"])
@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_a_bad_config_is_refused_before_any_step_runs(work: Path, name: str, mode: list[str]) -> None:
    text, words = BAD_CONFIGS[name]
    write_config(work, text)

    result = run_lynx("start", "-cf", "config.yaml", *mode, cwd=work)

    assert_config_refused(result, work, "config.yaml", *words)


def test_the_valid_config_used_above_does_run(work: Path) -> None:
    # Proves the markers work: without it, every `ran(...) == []` above could pass by accident.
    write_config(work, VALID)

    result = run_lynx("start", "-cf", "config.yaml", "-ni", cwd=work)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(work) == ["first.py", "second.py --x 1"]


def test_a_config_that_is_not_utf8_is_one_error_line(work: Path) -> None:
    (work / "config.yaml").write_bytes(b"steps:\n  - script: first.py\n    arguments: [\x80\xff]\n")

    result = run_lynx("start", "-cf", "config.yaml", "-ni", cwd=work)

    assert_config_refused(result, work, "config.yaml", "invalid YAML")


def test_an_error_quoting_a_name_with_a_newline_stays_one_line(work: Path) -> None:
    """Found by the fuzzer: a script named "new\\nline" that does not exist."""
    write_config(work, 'steps:\n  - script: first.py\n  - script: "new\\nline"\n')

    result = run_lynx("start", "-cf", "config.yaml", "-ni", cwd=work)

    assert_config_refused(result, work, "step 2 (new\\nline): script not found")


def test_a_config_over_16_mib_is_refused(work: Path) -> None:
    config = work / "config.yaml"
    with open(config, "wb") as handle:
        handle.write(b"steps:\n  - script: first.py\n#")
        handle.truncate(16 * 1024 * 1024 + 1)  # sparse: costs no disk and no time

    result = run_lynx("start", "-cf", "config.yaml", "-ni", cwd=work)

    assert_config_refused(result, work, "config.yaml", "bytes")


def test_a_missing_config_file_without_a_terminal_names_the_path(work: Path) -> None:
    result = run_lynx("start", "-cf", "conf/nope.yaml", "-ni", cwd=work)

    assert_config_refused(result, work, "conf/nope.yaml", "does not exist")


def test_the_default_config_path_is_named_when_it_is_missing(work: Path) -> None:
    result = run_lynx("start", cwd=work, input="")

    assert_config_refused(result, work, "conf/config.yaml", "does not exist")


def test_a_directory_given_as_config_is_refused(work: Path) -> None:
    (work / "conf").mkdir()

    result = run_lynx("start", "-cf", "conf", "-ni", cwd=work)

    assert_config_refused(result, work, "conf")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--log-level", "LOUD"], ["--log-level", "LOUD"]),
        (["-ll", "verbose"], ["-ll", "verbose"]),
        (["--log-size", "-1"], ["--log-size", "-1"]),
        (["-ls", "lots"], ["-ls", "lots"]),
        (["--log-backup-count", "-3"], ["--log-backup-count"]),
        (["--no-such-option"], ["--no-such-option"]),
    ],
)
def test_bad_options_are_usage_errors(work: Path, options: list[str], words: list[str]) -> None:
    write_config(work, VALID)

    result = run_lynx("start", "-cf", "config.yaml", "-ni", *options, cwd=work)

    assert_refused(result, work, *words)
    assert "Usage:" in result.stderr


def test_log_levels_are_accepted_in_any_case(work: Path) -> None:
    # The other side of the usage error above: a valid level in lower case runs.
    write_config(work, VALID)

    result = run_lynx("start", "-cf", "config.yaml", "-ni", "-ll", "warning", cwd=work)

    assert result.returncode == 0, result.stderr
    assert ran(work) == ["first.py", "second.py --x 1"]


@pytest.mark.parametrize("mode", [["-ni"], []], ids=["non-interactive", "interactive"])
def test_a_log_file_in_a_missing_directory_is_refused_up_front(work: Path, mode: list[str]) -> None:
    write_config(work, VALID)

    result = run_lynx("start", "-cf", "config.yaml", "-lf", "no/such/dir/lynx.log", *mode, cwd=work)

    assert_config_refused(result, work, "no/such/dir/lynx.log")
    assert not (work / "no").exists()


def test_a_log_file_in_a_missing_directory_is_refused_before_going_to_the_background(lynx_dir: Path) -> None:
    marker_step(lynx_dir, "first.py")
    marker_step(lynx_dir, "second.py")
    write_config(lynx_dir, "cron:\n  second: '*/2'\n" + VALID)

    result = run_lynx("start", "-cf", "config.yaml", "-bg", "-lf", "no/such/dir/lynx.log", cwd=lynx_dir)

    assert_config_refused(result, lynx_dir, "no/such/dir/lynx.log")
    assert not (lynx_dir / ".lynx_pid.json").exists()


def test_a_bad_config_is_refused_before_going_to_the_background(lynx_dir: Path) -> None:
    marker_step(lynx_dir, "first.py")
    write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: first.py\n  - script: gone.py\n")

    result = run_lynx("start", "-cf", "config.yaml", "-bg", "-lf", "lynx.log", cwd=lynx_dir)

    assert_config_refused(result, lynx_dir, "config.yaml", "step 2 (gone.py)", "not found")
    assert not (lynx_dir / ".lynx_pid.json").exists()


# --- the config-path prompt on a terminal ----------------------------------------------------


def spawn_lynx(directory: Path, *args: str) -> tuple[pexpect.spawn, io.StringIO]:
    transcript = io.StringIO()
    child = pexpect.spawn(
        lynx_command()[0],
        [*lynx_command()[1:], *args],
        cwd=str(directory),
        env=clean_env(),
        encoding="utf-8",
        codec_errors="replace",
        timeout=30,
        dimensions=(40, 200),
    )
    child.logfile_read = transcript
    return child, transcript


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return child.exitstatus


def test_a_missing_config_on_a_terminal_asks_for_the_path_and_runs_it(work: Path) -> None:
    write_config(work, VALID, name="real.yaml")
    child, transcript = spawn_lynx(work, "start", "-cf", "conf/config.yaml", "-ni")
    try:
        child.expect_exact(PROMPT)
        child.sendline("still/missing.yaml")
        child.expect_exact(PROMPT)  # asked again: the answer did not exist either
        assert ran(work) == []
        child.sendline("real.yaml")
        code = finish(child)
    finally:
        child.close(force=True)

    assert code == 0, transcript.getvalue()
    assert ran(work) == ["first.py", "second.py --x 1"]
    assert "Step 2 (second.py) completed successfully." in transcript.getvalue()
    assert "Traceback" not in transcript.getvalue()


def test_ctrl_d_at_the_config_path_prompt_exits_2_without_a_traceback(work: Path) -> None:
    child, transcript = spawn_lynx(work, "start", "-cf", "conf/config.yaml")
    try:
        child.expect_exact(PROMPT)
        child.sendeof()
        code = finish(child)
    finally:
        child.close(force=True)

    output = transcript.getvalue()
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    assert "conf/config.yaml" in errors[0]
    assert "Traceback" not in output
    assert ran(work) == []


def test_a_bad_config_given_at_the_prompt_is_refused(work: Path) -> None:
    write_config(work, "steps:\n  - script: first.py\n  - script: second.py\n    argument: [x]\n", name="bad.yaml")
    child, transcript = spawn_lynx(work, "start", "-cf", "conf/config.yaml", "-ni")
    try:
        child.expect_exact(PROMPT)
        child.sendline("bad.yaml")
        code = finish(child)
    finally:
        child.close(force=True)

    output = transcript.getvalue()
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    assert "bad.yaml" in errors[0]
    assert "step 2 (second.py)" in errors[0]
    assert "did you mean 'arguments'" in errors[0]
    assert "Traceback" not in output
    assert ran(work) == []


# --- regressions from review -------------------------------------------------------------------

NEVER_RUNNING_CRONS = {
    "bad-jitter": ("{second: '*/2', jitter: 'x'}", ["cron", "jitter"]),
    "end-date-in-the-past": ("{second: '0', end_date: '2000-01-01'}", ["cron", "end_date"]),
}


@pytest.mark.parametrize("mode", [["-ni"], []], ids=["non-interactive", "interactive"])
@pytest.mark.parametrize("name", list(NEVER_RUNNING_CRONS))
def test_a_cron_section_that_cannot_fire_is_refused_up_front(work: Path, name: str, mode: list[str]) -> None:
    cron, words = NEVER_RUNNING_CRONS[name]
    write_config(work, f"cron: {cron}\nsteps:\n  - script: first.py\n  - script: second.py\n")

    try:
        result = run_lynx("start", "-cf", "config.yaml", *mode, cwd=work, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("Lynx accepted the cron section and waited for a fire instead of refusing it")

    assert_config_refused(result, work, "config.yaml", *words)
