"""Unit tests of the config loader (lynx.config): YAML in, frozen Pipeline/Step/Schedule out."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, write_config, write_script
from hypothesis import given, settings
from hypothesis import strategies as st

from lynx.config import Pipeline, Schedule, Step, load_pipeline, split_arguments
from lynx.errors import ConfigError

STEP_BODY = "import sys\nsys.exit(0)\n"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory with the step scripts the configs below name."""
    for name in ("tasks/preprocess.py", "tasks/train.py", "tasks/validate.py", "a.py", "b.py"):
        write_script(tmp_path, name, STEP_BODY)
    return tmp_path


def load(directory: Path, text: str) -> Pipeline:
    return load_pipeline(write_config(directory, text), cwd=str(directory))


# --- valid configs ---------------------------------------------------------------------------


def test_the_example_config_of_the_repository_loads() -> None:
    pipeline = load_pipeline(REPO / "conf" / "config.yaml", cwd=str(REPO))

    assert [step.script for step in pipeline.steps] == [
        "tasks/preprocess.py",
        "tasks/train.py",
        "tasks/validate.py",
        "tasks/deploy.py",
    ]
    assert [step.number for step in pipeline.steps] == [1, 2, 3, 4]
    assert pipeline.steps[0].arguments == ("--input_file", "data/dummy.data", "nr_images=500", "filter=true")
    assert pipeline.steps[1].arguments == ()
    assert pipeline.steps[2].arguments == ("--input_file", "data/dummy.data", "--forty_two", "42")
    assert pipeline.schedule is not None
    assert dict(pipeline.schedule.fields) == {"second": "*/10"}


def test_anchors_on_list_values_and_merge_keys(work: Path) -> None:
    pipeline = load(
        work,
        """
        cron:
          second: '*/10'
        configs:
          - preprocess: &preprocess
                - script: tasks/preprocess.py
                  arguments:
                    - "--input_file data/dummy.data"
                    - "nr_images=500"
                    - "filter=true"
          - training: &training
              - script: tasks/train.py
        steps:
          - <<: *preprocess
          - <<: *training
          - <<: *preprocess
        """,
    )

    assert [(step.number, step.script, step.arguments) for step in pipeline.steps] == [
        (1, "tasks/preprocess.py", ("--input_file", "data/dummy.data", "nr_images=500", "filter=true")),
        (2, "tasks/train.py", ()),
        (3, "tasks/preprocess.py", ("--input_file", "data/dummy.data", "nr_images=500", "filter=true")),
    ]
    assert all(isinstance(step, Step) for step in pipeline.steps)


def test_an_anchor_on_the_list_item_merges(work: Path) -> None:
    pipeline = load(
        work,
        """
        configs:
          - preprocess:
            - &id001
              script: tasks/preprocess.py
              arguments:
                - "--input_file data/dummy.data"
          - validation:
            - &id002
              script: tasks/validate.py
        steps:
          - <<: *id001
          - <<: *id002
        """,
    )

    assert [(step.script, step.arguments) for step in pipeline.steps] == [
        ("tasks/preprocess.py", ("--input_file", "data/dummy.data")),
        ("tasks/validate.py", ()),
    ]


def test_plain_steps_with_and_without_arguments(work: Path) -> None:
    pipeline = load(
        work,
        """
        steps:
          - script: a.py
          - script: b.py
            arguments: []
          - script: a.py
            arguments: ["--x 1", "--y", "2"]
          - script: b.py
            arguments:
        """,
    )

    assert [step.arguments for step in pipeline.steps] == [(), (), ("--x", "1", "--y", "2"), ()]
    assert pipeline.schedule is None


def test_a_step_overrides_a_merged_key(work: Path) -> None:
    pipeline = load(
        work,
        """
        configs:
          - preprocess: &preprocess
              - script: tasks/preprocess.py
                arguments: ["--input_file data/dummy.data"]
        steps:
          - <<: *preprocess
            arguments: ["--input_file data/other.data", "--verbose"]
          - <<: *preprocess
            script: tasks/train.py
          - <<: *preprocess
        """,
    )

    assert [(step.script, step.arguments) for step in pipeline.steps] == [
        ("tasks/preprocess.py", ("--input_file", "data/other.data", "--verbose")),
        ("tasks/train.py", ("--input_file", "data/dummy.data")),
        ("tasks/preprocess.py", ("--input_file", "data/dummy.data")),
    ]


def test_numbers_as_argument_entries_become_words(work: Path) -> None:
    pipeline = load(
        work,
        """
        steps:
          - script: a.py
            arguments: [--n, 42, --rate, 0.5, "7"]
        """,
    )

    assert pipeline.steps[0].arguments == ("--n", "42", "--rate", "0.5", "7")


def test_argument_strings_with_quotes_and_unicode_from_yaml(work: Path) -> None:
    pipeline = load(
        work,
        """
        steps:
          - script: a.py
            arguments:
              - "--title 'two words'"
              - '--name "Łódź café" --emoji 🦊'
              - "--semi 'a; rm -rf /' --dollar '$HOME'"
        """,
    )

    assert pipeline.steps[0].arguments == (
        "--title",
        "two words",
        "--name",
        "Łódź café",
        "--emoji",
        "🦊",
        "--semi",
        "a; rm -rf /",
        "--dollar",
        "$HOME",
    )


# --- split_arguments -------------------------------------------------------------------------


def test_one_entry_splits_like_separate_entries() -> None:
    together = split_arguments(["--input_file data/dummy.data --forty_two 42"])
    apart = split_arguments(["--input_file", "data/dummy.data", "--forty_two", "42"])

    assert together == apart == ("--input_file", "data/dummy.data", "--forty_two", "42")


def test_quotes_keep_spaces() -> None:
    assert split_arguments(["--title 'two words'"]) == ("--title", "two words")
    assert split_arguments(['--title "two words" --n 1']) == ("--title", "two words", "--n", "1")
    assert split_arguments([r"--path a\ b"]) == ("--path", "a b")


def test_numbers_and_empty_entries() -> None:
    assert split_arguments([42, 1.5, "x"]) == ("42", "1.5", "x")
    assert split_arguments(["", "   "]) == ()
    assert split_arguments(["''"]) == ("",)


def test_an_unbalanced_quote_raises_value_error() -> None:
    with pytest.raises(ValueError):
        split_arguments(["--title 'two words"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False)), max_size=5))
def test_split_arguments_agrees_with_shlex(entries: list[object]) -> None:
    try:
        expected = tuple(word for entry in entries for word in shlex.split(str(entry)))
    except ValueError:
        with pytest.raises(ValueError):
            split_arguments(entries)
        return
    assert split_arguments(entries) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=6))
def test_quoted_words_joined_into_one_entry_come_back_as_the_same_words(words: list[str]) -> None:
    assert split_arguments([" ".join(shlex.quote(word) for word in words)]) == tuple(words)


# --- script lookup ---------------------------------------------------------------------------


def test_a_relative_script_is_looked_up_in_the_current_directory_first(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    conf = tmp_path / "conf"
    write_script(cwd, "step.py", STEP_BODY)
    write_script(conf, "step.py", STEP_BODY)
    config = write_config(conf, "steps:\n  - script: step.py\n")

    step = load_pipeline(config, cwd=str(cwd)).steps[0]

    assert step.script == "step.py"
    assert os.path.samefile(cwd / step.path, cwd / "step.py")


def test_a_relative_script_is_found_next_to_the_config_file(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    conf = tmp_path / "conf"
    write_script(conf, "tasks/step.py", STEP_BODY)
    config = write_config(conf, "steps:\n  - script: tasks/step.py\n")

    step = load_pipeline(config, cwd=str(cwd)).steps[0]

    assert step.script == "tasks/step.py"
    assert os.path.samefile(cwd / step.path, conf / "tasks" / "step.py")


def test_an_absolute_script_path_is_used_as_is(tmp_path: Path) -> None:
    script = write_script(tmp_path / "elsewhere", "step.py", STEP_BODY)
    config = write_config(tmp_path, f"steps:\n  - script: {script}\n")

    step = load_pipeline(config, cwd=str(tmp_path / "elsewhere")).steps[0]

    assert os.path.samefile(step.path, script)


def test_a_script_found_nowhere_is_an_error_naming_the_step_and_both_places(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    conf = tmp_path / "conf"
    conf.mkdir()
    write_script(cwd, "ok.py", STEP_BODY)
    config = write_config(conf, "steps:\n  - script: ok.py\n  - script: missing.py\n")

    with pytest.raises(ConfigError) as raised:
        load_pipeline(config, cwd=str(cwd))

    message = raised.value.format_message()
    assert "step 2 (missing.py)" in message
    assert "script not found" in message
    assert str(cwd / "missing.py") in message
    assert str(conf / "missing.py") in message
    assert raised.value.exit_code == 2


def test_a_missing_script_beside_a_config_in_the_working_directory_names_one_place(tmp_path: Path) -> None:
    config = write_config(tmp_path, "steps:\n  - script: missing.py\n")

    with pytest.raises(ConfigError) as raised:
        load_pipeline(config, cwd=str(tmp_path))

    assert raised.value.format_message().endswith(f"script not found (looked in {tmp_path / 'missing.py'})")


def test_a_directory_is_not_a_script(tmp_path: Path) -> None:
    (tmp_path / "folder.py").mkdir()
    with pytest.raises(ConfigError, match=r"step 1 \(folder\.py\): script not found"):
        load(tmp_path, "steps:\n  - script: folder.py\n")


# --- cron ------------------------------------------------------------------------------------


def test_a_cron_section_becomes_a_schedule_whose_trigger_builds(work: Path) -> None:
    from apscheduler.triggers.base import BaseTrigger

    pipeline = load(
        work,
        """
        cron:
          day_of_week: mon-fri
          hour: 9
          minute: 30
          timezone: UTC
        steps:
          - script: a.py
        """,
    )

    assert isinstance(pipeline.schedule, Schedule)
    assert dict(pipeline.schedule.fields) == {"day_of_week": "mon-fri", "hour": 9, "minute": 30, "timezone": "UTC"}
    trigger = pipeline.schedule.trigger()
    assert isinstance(trigger, BaseTrigger)
    now = datetime.datetime(2024, 1, 6, 12, 0, tzinfo=datetime.timezone.utc)  # a Saturday
    fire = trigger.get_next_fire_time(None, now)
    assert (fire.weekday(), fire.hour, fire.minute, fire.second) == (0, 9, 30, 0)
    assert fire.utcoffset() == datetime.timedelta(0)


def test_a_cron_section_without_timezone_uses_local_time(work: Path) -> None:
    pipeline = load(work, "cron:\n  second: '*/2'\nsteps:\n  - script: a.py\n")

    assert pipeline.schedule is not None
    trigger = pipeline.schedule.trigger()
    fire = trigger.get_next_fire_time(None, datetime.datetime.now(trigger.timezone))
    assert fire.second % 2 == 0


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("{secnd: 1}", ["cron", "secnd", "did you mean 'second'"]),
        ("{second: '*/99'}", ["cron", "second"]),
        ("{hour: 25}", ["cron", "hour"]),
        ("[1, 2]", ["cron", "mapping"]),
        ("{}", ["cron", "empty"]),
    ],
)
def test_bad_cron_sections_are_config_errors_naming_the_field(work: Path, cron: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        load(work, f"cron: {cron}\nsteps:\n  - script: a.py\n")

    message = raised.value.format_message()
    for word in words:
        assert word in message


# --- interpolation ---------------------------------------------------------------------------


def test_interpolations_are_resolved(work: Path) -> None:
    pipeline = load(
        work,
        """
        configs:
          - data: data/dummy.data
          - answer: 42
          - script: a.py
        steps:
          - script: ${configs.2.script}
            arguments:
              - "--input_file ${configs.0.data}"
              - "--forty_two=${configs[1].answer}"
        """,
    )

    step = pipeline.steps[0]
    assert step.script == "a.py"
    assert step.arguments == ("--input_file", "data/dummy.data", "--forty_two=42")
    # Nothing past the loader sees OmegaConf objects: plain str all the way down.
    assert type(step.script) is str
    assert all(type(word) is str for word in step.arguments)


def test_an_interpolation_to_a_missing_key_is_a_config_error(work: Path) -> None:
    with pytest.raises(ConfigError, match="interpolation"):
        load(work, "steps:\n  - script: a.py\n    arguments: ['${configs.nope}']\n")


def test_values_read_from_the_environment_remember_their_interpolation(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lynx.records import FromEnvironment

    monkeypatch.setenv("LYNX_TEST_TOKEN", "s3cret")
    monkeypatch.setenv("LYNX_TEST_TRIES", "3")
    pipeline = load(
        work,
        """
        vars:
          token: ${oc.env:LYNX_TEST_TOKEN}
          plain: p
        steps:
          - script: a.py
            retries: ${oc.decode:${oc.env:LYNX_TEST_TRIES}}
            env: {X: "${oc.env:LYNX_TEST_TOKEN}", Y: "${.X}", Z: "${vars.token}", P: "${vars.plain}"}
          - script: a.py
            env: {X: plain, Y: "${.X}", Z: "${vars.token}"}
        """,
    )

    first, second = (dict(step.env) for step in pipeline.steps)
    # Decoded on its way as before: the environment's text became a number.
    assert pipeline.steps[0].retries == 3
    assert first == {"X": "s3cret", "Y": "s3cret", "Z": "s3cret", "P": "p"}
    assert {key: getattr(value, "written", None) for key, value in first.items()} == {
        "X": "${oc.env:LYNX_TEST_TOKEN}",
        "Y": "${.X}",
        "Z": "${vars.token}",
        "P": None,
    }
    # The same relative text in another step reads no environment there.
    assert type(second["Y"]) is str and isinstance(second["Z"], FromEnvironment)


# --- records are frozen ----------------------------------------------------------------------


def test_the_records_are_frozen(work: Path) -> None:
    pipeline = load(work, "cron:\n  second: 1\nsteps:\n  - script: a.py\n    arguments: [--x 1]\n")
    step = pipeline.steps[0]

    with pytest.raises(dataclasses.FrozenInstanceError):
        step.script = "b.py"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        pipeline.steps = ()  # type: ignore[misc]
    assert pipeline.schedule is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        pipeline.schedule.fields = ()  # type: ignore[misc]
    assert isinstance(pipeline.steps, tuple)
    assert isinstance(step.arguments, tuple)
    assert isinstance(pipeline.schedule.fields, tuple)
    assert step.label == "Step 1 (a.py)"


# --- errors name the step and the field ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "steps:\n  - script: a.py\n  - script: b.py\n    argument: [x]\n",
            ["step 2 (b.py)", "did you mean 'arguments'"],
        ),
        ("step:\n  - script: a.py\n", ["unknown key 'step'", "did you mean 'steps'"]),
        ("steps:\n  - script: a.py\n  - arguments: [x]\n", ["step 2", "'script' is missing"]),
        ("steps:\n  - script: a.py\n    arguments: --x 1\n", ["step 1 (a.py)", "'arguments'", "list"]),
        ("steps:\n  - script: a.py\n    arguments: [{x: 1}]\n", ["step 1 (a.py)", "'arguments' entry 1"]),
        ('steps:\n  - script: a.py\n    arguments: ["\'open"]\n', ["step 1 (a.py)", "quotation"]),
        ("steps:\n  - a.py\n", ["step 1", "mapping"]),
        ("steps: []\n", ["'steps' is empty"]),
        ("configs: []\n", ["'steps' is missing"]),
        ("- script: a.py\n", ["mapping", "list"]),
        ("", ["empty"]),
        ("steps: [\n", ["invalid YAML", "line 2"]),
    ],
)
def test_errors_name_the_file_and_the_step_or_field(work: Path, text: str, words: list[str]) -> None:
    config = write_config(work, text)
    with pytest.raises(ConfigError) as raised:
        load_pipeline(config, cwd=str(work))

    message = raised.value.format_message()
    assert message.startswith(str(config))
    for word in words:
        assert word in message
    assert "\n" not in message


# --- size: honest large configs load, bombs are refused ---------------------------------------


def test_a_5000_step_config_with_a_merge_key_on_every_step_loads(work: Path) -> None:
    lines = ["configs:"]
    for index in range(10):
        lines += [
            f"  - step{index}: &step{index}",
            "      - script: a.py",
            "        arguments:",
            f'          - "--input_file data/dummy.data --index {index}"',
        ]
    lines.append("steps:")
    lines += [f"  - <<: *step{number % 10}" for number in range(5000)]
    pipeline = load(work, "\n".join(lines) + "\n")

    assert len(pipeline.steps) == 5000
    assert [step.number for step in pipeline.steps] == list(range(1, 5001))
    assert pipeline.steps[-1].arguments == ("--input_file", "data/dummy.data", "--index", "9")
    assert pipeline.steps[1234].arguments[-1] == "4"


def billion_laughs(levels: int, width: int, *, interpolation: bool = False) -> str:
    """Nested aliases: ``width ** levels`` leaves from a file of a few hundred bytes."""
    lines = ["configs:", f"  - &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"  - &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    if interpolation:
        lines.append('  - x: "${configs.0}"')
    lines += ["steps:", f"  - script: a.py\n    arguments: *l{levels - 1}"]
    return "\n".join(lines) + "\n"


LOAD_IN_CHILD = textwrap.dedent(
    """
    import resource, sys
    limit = 1 << 30  # the bomb must not get near this
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from lynx.config import load_pipeline
    from lynx.errors import ConfigError
    try:
        load_pipeline(sys.argv[1], cwd=sys.argv[2])
    except ConfigError as error:
        print("ConfigError:", error.format_message())
    else:
        print("loaded")
    # VmHWM, unlike ru_maxrss, does not carry over the parent's peak across fork and exec.
    with open("/proc/self/status") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print("peak MiB:", peak_kib // 1024)
    """
)


def load_in_child(config: Path, cwd: Path) -> tuple[str, int]:
    """Load in a memory-capped child so a bomb that gets through cannot take the test run with it."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", LOAD_IN_CHILD, str(config), str(cwd)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the loader was still expanding the bomb after 30 s instead of refusing it")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    return lines[0], int(lines[-1].split()[-1])


@pytest.mark.parametrize(("levels", "width"), [(9, 9), (30, 2), (6, 30)])
def test_a_yaml_bomb_is_refused_without_eating_memory(work: Path, levels: int, width: int) -> None:
    config = write_config(work, billion_laughs(levels, width))

    outcome, peak_mib = load_in_child(config, work)

    assert outcome.startswith("ConfigError:")
    assert "alias" in outcome
    assert peak_mib < 200


def test_a_yaml_bomb_with_an_interpolation_is_refused_without_eating_memory(work: Path) -> None:
    # About a million nodes once expanded: under the alias limit for plain YAML, but OmegaConf
    # (needed only because of the interpolation) would build every one of them as an object.
    config = write_config(work, billion_laughs(6, 9, interpolation=True))

    outcome, peak_mib = load_in_child(config, work)

    assert outcome.startswith("ConfigError:")
    assert peak_mib < 200


def test_an_honest_config_loads_in_the_memory_capped_child(work: Path) -> None:
    # The harness above must be able to say "loaded", or the bomb tests prove nothing.
    config = write_config(
        work, "configs:\n  - x: &x {script: a.py}\nsteps:\n  - <<: *x\n  - script: '${configs.0.x.script}'\n"
    )

    outcome, peak_mib = load_in_child(config, work)

    assert outcome == "loaded"
    assert peak_mib < 200


def test_a_recursive_alias_is_refused(work: Path) -> None:
    with pytest.raises(ConfigError, match="alias"):
        load(work, "configs: &a [*a]\nsteps:\n  - script: a.py\n")
    with pytest.raises(ConfigError, match="alias"):
        load(work, "steps: &a\n  - script: a.py\n    arguments: *a\n")


def test_a_file_over_16_mib_is_refused_before_it_is_read(work: Path) -> None:
    config = work / "huge.yaml"
    with open(config, "wb") as handle:
        handle.truncate(16 * 1024 * 1024 + 1)

    with pytest.raises(ConfigError, match="bytes"):
        load_pipeline(config, cwd=str(work))


def test_a_missing_config_file_is_a_config_error(work: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_pipeline(work / "nope.yaml", cwd=str(work))


# --- regressions from review -------------------------------------------------------------------

SPLIT_IN_CHILD = textwrap.dedent(
    """
    import json, sys
    from lynx.config import load_pipeline
    pipeline = load_pipeline(sys.argv[1], cwd=sys.argv[2])
    print(json.dumps(list(pipeline.steps[0].arguments)))
    """
)


def test_an_argument_with_a_long_run_of_spaces_before_a_quote_loads_at_once(work: Path) -> None:
    entry = "--target" + " " * 40 + "'a b'"
    config = write_config(work, f"steps:\n  - script: a.py\n    arguments: [{json.dumps(entry)}]\n")
    try:
        done = subprocess.run(
            [sys.executable, "-c", SPLIT_IN_CHILD, str(config), str(work)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=5,  # generous: the loader takes a small fraction of this
        )
    except subprocess.TimeoutExpired:
        pytest.fail("loading one argument entry took more than 5 s (backtracking?)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == ["--target", "a b"]


def test_an_unquoted_yaml_date_in_cron_works_together_with_an_interpolation(work: Path) -> None:
    from apscheduler.triggers.base import BaseTrigger

    pipeline = load(
        work,
        """
        configs:
          - script: a.py
        cron:
          second: '*/2'
          start_date: 2020-01-01
          timezone: UTC
        steps:
          - script: ${configs.0.script}
        """,
    )

    assert pipeline.steps[0].script == "a.py"
    assert pipeline.schedule is not None
    trigger = pipeline.schedule.trigger()
    assert isinstance(trigger, BaseTrigger)
    assert trigger.start_date == datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    fire = trigger.get_next_fire_time(None, datetime.datetime(2024, 1, 1, 12, 0, 1, tzinfo=datetime.timezone.utc))
    assert fire == datetime.datetime(2024, 1, 1, 12, 0, 2, tzinfo=datetime.timezone.utc)


# --- nothing in a config is dropped or changed silently (issue 7 #16, #17) ---------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "steps:\n  - script: a.py\nsteps:\n  - script: b.py\n",
            ["line 3", "duplicate key 'steps'", "first at line 1"],
        ),
        (
            "steps:\n  - script: a.py\n    arguments: [--x]\n    arguments: [--y]\n",
            ["line 4", "duplicate key 'arguments'", "first at line 3"],
        ),
        ("cron:\n  second: 1\n  second: 2\nsteps:\n  - script: a.py\n", ["line 3", "duplicate key 'second'"]),
    ],
)
def test_a_duplicate_key_is_an_error_naming_the_line(work: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        load(work, text)

    message = raised.value.format_message()
    for word in words:
        assert word in message
    assert "\n" not in message


def test_a_merge_of_a_list_of_several_steps_is_an_error_that_says_how_to_write_it(work: Path) -> None:
    text = """
        configs:
          - prep: &prep
              - script: a.py
              - script: b.py
        steps:
          - <<: *prep
        """
    with pytest.raises(ConfigError) as raised:
        load(work, text)

    message = raised.value.format_message()
    assert "line 7" in message
    assert "merges a list of 2 steps into one step" in message
    assert "steps: [name]" in message


def test_merges_that_drop_nothing_still_work(work: Path) -> None:
    pipeline = load(
        work,
        """
        configs:
          - base: &base {script: a.py}
          - args: &args {arguments: [--x 1]}
        steps:
          - <<: [*base, *args]
          - <<: *base
            script: b.py
        """,
    )

    assert [(step.script, step.arguments) for step in pipeline.steps] == [("a.py", ("--x", "1")), ("b.py", ())]


def test_arguments_keep_the_text_yaml_1_1_would_turn_into_other_numbers(work: Path) -> None:
    pipeline = load(
        work,
        """
        steps:
          - script: a.py
            arguments: [3.10, 010, 0x1F, 12:30, 1_000, .5, 2024-01-31, -0]
          - script: a.py
            arguments: {python: 3.10, mode: 010, hex: 0x1F, at: 12:30, flag: true, bare: null}
        """,
    )

    assert pipeline.steps[0].arguments == ("3.10", "010", "0x1F", "12:30", "1_000", ".5", "2024-01-31", "-0")
    assert pipeline.steps[1].arguments == (
        "--python", "3.10", "--mode", "010", "--hex", "0x1F", "--at", "12:30", "--flag", "True", "--bare",
    )  # fmt: skip


def test_arguments_keep_their_text_also_when_the_config_interpolates(work: Path) -> None:
    pipeline = load(
        work,
        """
        vars:
          data: x
        steps:
          - script: a.py
            arguments: [3.10, "${vars.data}"]
            env: {V: 3.10}
        """,
    )

    assert pipeline.steps[0].arguments == ("3.10", "x")
    assert pipeline.steps[0].env == (("V", "3.10"),)


def test_the_new_step_keys_become_plain_frozen_fields(work: Path) -> None:
    (work / "models").mkdir()
    step = load(
        work,
        f"""
        steps:
          - script: a.py
            name: train
            env: {{A: 1, B: null}}
            cwd: models
            timeout: 90
            retries: 2
            retry_delay: 5
            retry_backoff: 2
            continue_on_error: true
            python: {sys.executable}
        """,
    ).steps[0]

    assert (step.name, step.env, step.cwd) == ("train", (("A", "1"), ("B", None)), str(work / "models"))
    assert (step.timeout, step.retries, step.retry_delay, step.retry_backoff) == (90.0, 2, 5.0, 2.0)
    assert step.continue_on_error is True
    assert step.python == os.path.abspath(sys.executable)
    assert step.label == "Step 1 (train)"
    # The script is found where Lynx runs, wherever the step runs.
    assert os.path.isabs(step.path) and os.path.samefile(step.path, work / "a.py")
    assert type(step.timeout) is float and type(step.retries) is int


# --- what a review of issues 7 and 10 found ---------------------------------------------------------


def test_a_merge_of_steps_that_themselves_merge_is_refused(work: Path) -> None:
    """Items written as '- <<: *a' are steps too, whether their anchor is used before or not."""
    with pytest.raises(ConfigError, match="merges a list of 2 steps into one step"):
        load(
            work,
            """
            configs:
              - a: &a {script: a.py}
              - b: &b {script: b.py}
              - both: &both [{<<: *a}, {<<: *b}]
            steps:
              - <<: *both
            """,
        )


def test_two_merge_keys_in_one_step_are_a_duplicate_key(work: Path) -> None:
    with pytest.raises(ConfigError, match=r"duplicate key '<<' .*merge several with one list: <<: \[\*a, \*b\]"):
        load(
            work,
            """
            configs:
              - a: &a {script: a.py}
              - b: &b {script: b.py}
            steps:
              - <<: *a
                <<: *b
            """,
        )


def test_numbers_keep_their_text_everywhere_when_the_config_interpolates(work: Path) -> None:
    """A ${...} anywhere must not change what YAML's other numbers mean: each is what it was without it."""
    pipeline = load(
        work,
        """
        vars: {py: 3.10, epochs: 010, limit: 600}
        steps:
          - script: a.py
            name: 010
            timeout: ${vars.limit}
            arguments: ["--python python${vars.py}", "--epochs ${vars.epochs}"]
            slurm: {time: 10:00}
        """,
    )

    (step,) = pipeline.steps
    assert step.name == "010"
    assert step.timeout == 600.0
    assert step.arguments == ("--python", "python3.10", "--epochs", "010")
    assert step.slurm == (("time", "10:00"),)


def test_timestamps_in_arguments_reach_the_step_as_written(work: Path) -> None:
    pipeline = load(
        work,
        """
        steps:
          - script: a.py
            arguments: {at: 2024-01-01T10:00:00.50Z, day: 2024-01-01}
        """,
    )

    assert pipeline.steps[0].arguments == ("--at", "2024-01-01T10:00:00.50Z", "--day", "2024-01-01")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("timeout", "1" + "0" * 400),
        ("timeout", "1000000000000.0"),
        ("retry_delay", "1.0e+12"),
        ("retries", "10000000000"),
    ],
)
def test_waits_too_long_for_any_clock_are_refused(work: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"step 1 \\(a.py\\): '{key}' must be .*(at most 1e\\+09|to 1000000000)"):
        load(work, f"steps:\n  - script: a.py\n    {key}: {value}\n")


def test_a_misfire_grace_time_too_long_for_any_clock_is_refused(work: Path) -> None:
    with pytest.raises(ConfigError, match="'misfire_grace_time' must be a whole number from 1 to"):
        load(work, "cron: {second: '*/5', misfire_grace_time: 86400000000000}\nsteps:\n  - script: a.py\n")


def test_a_name_given_twice_in_the_configs_list_is_refused(work: Path) -> None:
    with pytest.raises(ConfigError, match="'configs' entry 2 is named 'pre' again"):
        load(
            work,
            """
            configs:
              - pre: {script: a.py}
              - pre: {script: b.py}
            steps: [pre]
            """,
        )


def test_python_on_a_script_that_is_run_directly_is_refused(work: Path) -> None:
    tool = write_script(work, "tool.sh", "#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    with pytest.raises(ConfigError, match=r"'python' is the interpreter of \.py scripts; tool\.sh is run directly"):
        load(work, f"steps:\n  - script: tool.sh\n    python: {sys.executable}\n")


def test_a_retry_without_a_delay_waits_nothing_whatever_the_backoff(work: Path) -> None:
    (step,) = load(work, "steps:\n  - script: a.py\n    retries: 2000\n    retry_backoff: 2\n").steps

    assert [step.retry_wait(attempt) for attempt in (1, 2, 1024, 1025, 1999)] == [0.0] * 5


def test_a_string_with_nul_bytes_goes_through_an_interpolation_untouched(work: Path) -> None:
    """Numbers go through OmegaConf as placeholders; no text of the file can pass for one."""
    (step,) = load(work, 'vars: {x: 3.10}\nsteps:\n  - script: a.py\n    name: "\\x009\\x00 ${vars.x}"\n').steps

    assert step.name == "\x009\x00 3.10"


def test_every_step_key_has_exactly_one_rule_and_every_rule_a_record_field() -> None:
    """A new step key is one rule in steps.RULES, its name in STEP_KEYS and a field of Step: none forgotten."""
    import dataclasses

    from lynx.config.steps import PIPELINE_KEYS, RULES, STEP_KEYS

    # 'needs' and 'matrix' concern other steps, or several steps made from one: lynx.config.pipeline reads them.
    assert set(RULES) - {"path"} == set(STEP_KEYS) - {"script", "arguments", *PIPELINE_KEYS}
    fields = {field.name for field in dataclasses.fields(Step)}
    assert set(RULES) | {"number", "script", "arguments", *PIPELINE_KEYS} == fields


def test_the_records_import_nothing_of_lynx_and_slurm_runs_jobs_without_the_config() -> None:
    """Modules that need a Step depend on the records, never on the parser (no import circle)."""
    import ast

    import lynx

    package = Path(lynx.__file__).parent
    for module in ("records.py", "slurm.py", "runner.py", "launch.py", "history.py"):
        tree = ast.parse((package / module).read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not any(name == "lynx.config" or name.startswith("lynx.config.") for name in imported), module
        if module == "records.py":
            assert {name for name in imported if name.startswith("lynx")} <= {"lynx.cron", "lynx.channels"}
