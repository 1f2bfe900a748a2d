"""Property-based fuzzing of the config (issue 3): any YAML Lynx is given ends in exit 0, 1 or 2, never a traceback.

Documents are generated as a small tree (mappings, lists, scalars, anchors, aliases, merge keys) and rendered
as YAML text in block or flow style, with scalars plain, single- or double-quoted, and sometimes mutated at the
text level. Half of them are shaped like a real config (steps with scripts that exist and arguments with
quotes and unicode), so that valid configs are common and their steps really run.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import pytest
from conftest import marker_step, ran, run_lynx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lynx.config import Pipeline, Schedule, Step, load_pipeline
from lynx.errors import ConfigError
from lynx.records import FromEnvironment

CLI_EXAMPLES = 120
LOADER_EXAMPLES = 1500
# How many examples each fuzz test ran, and how the CLI runs ended; printed at the end of each test.
COUNTS: collections.Counter[str] = collections.Counter()

# Marker scripts in the fuzz directory: script name -> the name the marker records, and its exit code.
# "-dash.py": a script path must reach Python as a path, not as an option.
MARKERS = {"ok.py": 0, "fail.py": 1, "sub dir/ünï ok.py": 0, "-dash.py": 0}
SCRIPTS = (*MARKERS, "./ok.py", "sub dir/../ok.py", "missing.py", "ok.py ", "", "tasks/", "ok")
ANCHORS = ("a", "b", "c")
KEYS = (
    "steps",
    "configs",
    "cron",
    "script",
    "arguments",
    "argument",
    "second",
    "minute",
    "hour",
    "day_of_week",
    "timezone",
    "jitter",
    "<<",
    "x",
    "Steps",
)
CRON_FIELDS = ("second", "minute", "hour", "day_of_week", "day", "timezone", "jitter", "start_date", "secnd")
CRON_VALUES = ("*/2", "*/99", "25", "0", "1-5", "mon-fri", "funday", "UTC", "Mars/Olympus", "2001-12-14", "*", "last")
ARGUMENTS = (
    "--x 1",
    "--input_file data/dummy.data --forty_two 42",
    "--title 'two words'",
    '--q "a b" c',
    "nr_images=500",
    "$HOME",
    "a;b|c&&d > out",
    "`id` $(id)",
    "Łódź 🦊 日本",
    "back\\slash",
    "'",
    '"',
    "--open 'quote",
    "${configs.0}",
    "${nope}",
    "--home ${oc.env:HOME}",
    "",
    "   ",
    "tab\there",
    "new\nline",
    "nul\x00byte",
)
GOOD_SCRIPTS = (*MARKERS, "./ok.py", "sub dir/../fail.py")
GOOD_ARGUMENTS = tuple(text for text in ARGUMENTS if text not in ("--open 'quote", "${nope}", "nul\x00byte", "'", '"'))
GOOD_CRON_FIELDS = ("second", "minute", "hour", "day_of_week")
GOOD_CRON_VALUES = ("*/2", "0", "1-5", "*", "3")
# Written into the YAML as they are: tags, special plain scalars, YAML syntax.
RAW = (
    "null",
    "~",
    "true",
    "no",
    "1e3",
    "0x1f",
    ".nan",
    "-.inf",
    "2001-12-14",
    "2001-12-14 21:59:43.10 -5",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [x: 1, y: 2]",
    "!!python/name:os.system",
    "!!str 42",
    "!!float nope",
    "!!int 99999999999999999999999999999999",
    "!!map [1]",
    "!custom thing",
    "? complex",
    "*",
    "&",
    "[",
    "}",
    "'",
    '"',
    "- -",
    "{a: 1, a: 2}",
    "%YAML 1.1",
    "---",
    "...",
)
TEXT = st.text(
    st.characters(exclude_categories=("Cs", "Cc")),
    max_size=10,
)
MUTATIONS = ":-[]{}&*!|>'\"#%@`,?\t\n \\\x00\ufeff"


# --- a tiny YAML tree and its rendering ----------------------------------------------------------


@dataclass
class Scalar:
    text: str
    style: str = "plain"  # plain, single, double, raw
    anchor: str | None = None


@dataclass
class Alias:
    name: str


@dataclass
class Seq:
    items: list[Node]
    flow: bool = False
    anchor: str | None = None


@dataclass
class Map:
    entries: list[tuple[Node, Node]] = field(default_factory=list)
    flow: bool = False
    anchor: str | None = None


Node = Union[Scalar, Alias, Seq, Map]


def render_scalar(scalar: Scalar) -> str:
    if scalar.style == "single":
        text = "'" + scalar.text.replace("'", "''") + "'"
    elif scalar.style == "double":
        text = json.dumps(scalar.text, ensure_ascii=False)
    else:
        text = scalar.text
    return f"&{scalar.anchor} {text}" if scalar.anchor else text


def flow(node: Node) -> str:
    if isinstance(node, Scalar):
        return render_scalar(node)
    if isinstance(node, Alias):
        return f"*{node.name}"
    prefix = f"&{node.anchor} " if node.anchor else ""
    if isinstance(node, Seq):
        return prefix + "[" + ", ".join(flow(item) for item in node.items) + "]"
    return prefix + "{" + ", ".join(f"{flow(key)}: {flow(value)}" for key, value in node.entries) + "}"


def inline(node: Node) -> str | None:
    """The node on one line, or None when it goes in block style below its key or dash."""
    if isinstance(node, (Scalar, Alias)) or node.flow:
        return flow(node)
    if not (node.items if isinstance(node, Seq) else node.entries):
        return flow(node)
    return None


def block(node: Seq | Map, indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(node, Map):
        for key, value in node.entries:
            text = inline(value)
            if text is not None:
                lines.append(f"{pad}{flow(key)}: {text}")
            else:
                assert isinstance(value, (Seq, Map))
                lines.append(f"{pad}{flow(key)}:" + (f" &{value.anchor}" if value.anchor else ""))
                lines += block(value, indent + 1)
        return lines
    for item in node.items:
        text = inline(item)
        if text is not None:
            lines.append(f"{pad}- {text}")
        elif item.anchor:  # the anchor on the list item, as in "- &id001\n    script: ..."
            assert isinstance(item, (Seq, Map))
            lines.append(f"{pad}- &{item.anchor}")
            lines += block(item, indent + 1)
        else:
            assert isinstance(item, (Seq, Map))
            inner = block(item, indent + 1)
            lines.append(f"{pad}- {inner[0].lstrip()}")
            lines += inner[1:]
    return lines


def render(node: Node) -> str:
    text = inline(node)
    if text is not None:
        return text + "\n"
    assert isinstance(node, (Seq, Map))
    head = [f"&{node.anchor}"] if node.anchor else []
    return "\n".join(head + block(node, 0)) + "\n"


# --- strategies ----------------------------------------------------------------------------------

anchors = st.one_of(st.none(), st.sampled_from(ANCHORS))
styles = st.sampled_from(("plain", "single", "double"))


def scalars(texts: st.SearchStrategy[str], *, aliases: bool = True) -> st.SearchStrategy[Node]:
    options = [
        st.builds(Scalar, texts, styles),
        st.builds(Scalar, st.sampled_from(RAW), st.just("raw")),
        st.builds(Scalar, st.integers(-(10**6), 10**6).map(str), st.just("raw")),
    ]
    if aliases:
        options += [st.builds(Scalar, texts, styles, anchors), st.builds(Alias, st.sampled_from(ANCHORS))]
    return st.one_of(options)


leaf = scalars(st.one_of(st.sampled_from(KEYS + SCRIPTS + ARGUMENTS + CRON_VALUES), TEXT))
keys = st.one_of(
    st.builds(Scalar, st.sampled_from(KEYS)),
    st.builds(Scalar, st.sampled_from(KEYS), styles),
    scalars(st.one_of(st.sampled_from(KEYS), TEXT)),
)


def containers(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(Seq, st.lists(children, max_size=4), st.booleans(), anchors),
        st.builds(Map, st.lists(st.tuples(keys, children), max_size=4), st.booleans(), anchors),
    )


# Any shape at all, with anchors and aliases anywhere (often undefined or repeated: also worth trying).
any_node = st.recursive(leaf, containers, max_leaves=16)


def rarely(common: st.SearchStrategy[Node], rare: st.SearchStrategy[Node], faults: bool) -> st.SearchStrategy[Node]:
    """``common`` nine times out of ten when ``faults``, else always."""
    if not faults:
        return common
    return st.integers(0, 9).flatmap(lambda roll: rare if roll == 0 else common)


def argument_lists(faults: bool) -> st.SearchStrategy[Node]:
    texts = ARGUMENTS if faults else GOOD_ARGUMENTS
    entries = rarely(
        st.one_of(
            st.builds(Scalar, st.sampled_from(texts), styles),
            st.builds(Scalar, st.sampled_from(texts), st.just("double")),
            st.builds(Scalar, st.integers(0, 1000).map(str), st.just("raw")),
        ),
        st.one_of(st.builds(Scalar, TEXT, st.just("double")), leaf, any_node),
        faults,
    )
    return rarely(st.builds(Seq, st.lists(entries, max_size=4), st.booleans()), any_node, faults)


def script_names(faults: bool) -> st.SearchStrategy[Node]:
    return rarely(
        st.builds(Scalar, st.sampled_from(GOOD_SCRIPTS), styles),
        st.one_of(st.builds(Scalar, st.sampled_from(SCRIPTS), styles), leaf),
        faults,
    )


@st.composite
def steps(draw: st.DrawFn, faults: bool, defined: tuple[str, ...] = ()) -> Node:
    """A step mapping: with a script and arguments, perhaps a merge key; with ``faults``, sometimes anything."""
    entries: list[tuple[Node, Node]] = []
    if defined and draw(st.integers(0, 3)) == 0:
        entries.append((Scalar("<<"), Alias(draw(st.sampled_from(defined)))))
    if not entries or draw(st.booleans()):
        if not faults or draw(st.integers(0, 19)) > 0:
            entries.append((Scalar("script"), draw(script_names(faults))))
        if draw(st.booleans()):
            key = draw(rarely(st.just(Scalar("arguments")), st.builds(Scalar, st.sampled_from(KEYS)), faults))
            entries.append((key, draw(argument_lists(faults))))
    if faults and draw(st.integers(0, 19)) == 0:
        entries.append((draw(keys), draw(any_node)))
    entries = draw(st.permutations(entries))
    return draw(rarely(st.just(Map(entries, draw(st.booleans()))), any_node, faults))


def cron_sections(faults: bool) -> st.SearchStrategy[Node]:
    fields = CRON_FIELDS if faults else GOOD_CRON_FIELDS
    values = CRON_VALUES if faults else GOOD_CRON_VALUES
    return rarely(
        st.builds(
            Map,
            st.lists(
                st.tuples(
                    st.builds(Scalar, st.sampled_from(fields)),
                    rarely(st.builds(Scalar, st.sampled_from(values), styles), leaf, faults),
                ),
                min_size=0 if faults else 1,
                max_size=3,
                unique_by=lambda entry: entry[0].text,
            ),
            st.booleans(),
        ),
        leaf,
        faults,
    )


@st.composite
def configs_shaped(draw: st.DrawFn, faults: bool) -> Node:
    """A document in the shape of the README's config: cron, configs with anchors, steps with merge keys."""
    entries: list[tuple[Node, Node]] = []
    if draw(st.integers(0, 3)) == 0:
        entries.append((Scalar("cron"), draw(cron_sections(faults))))
    defined = tuple(draw(st.lists(st.sampled_from(ANCHORS), max_size=3, unique=True)))
    if defined:
        named = []
        for anchor in defined:
            step = draw(steps(faults))
            if isinstance(step, (Seq, Map)) and not step.anchor and draw(st.booleans()):
                step.anchor = anchor  # on the list item: "- &a\n    script: ..."
                value: Node = Seq([step])
            else:
                value = Seq([step], anchor=anchor)  # on the list value: "name: &a\n  - script: ..."
            named.append(Map([(Scalar(f"step_{anchor}"), value)]))
        entries.append((Scalar("configs"), Seq(named)))
    if not faults or draw(st.integers(0, 19)) > 0:
        size = draw(rarely(st.just(1), st.just(0), faults))
        listed = draw(st.lists(steps(faults, defined), min_size=size, max_size=4))
        key = draw(rarely(st.just(Scalar("steps")), keys, faults))
        entries.append((key, Seq(listed, draw(st.booleans()))))
    if faults and draw(st.integers(0, 19)) == 0:
        entries.append((draw(keys), draw(any_node)))
    return Map(draw(st.permutations(entries)))


@st.composite
def documents(draw: st.DrawFn) -> str:
    """Valid-looking configs, configs with faults, and anything at all, in about equal parts."""
    kind = draw(st.sampled_from(("valid", "valid", "faults", "faults", "faults", "any")))
    tree = draw(any_node if kind == "any" else configs_shaped(faults=kind == "faults"))
    text = render(tree)
    if kind != "valid" and draw(st.integers(0, 3)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            position = draw(st.integers(0, len(text)))
            if draw(st.booleans()):
                text = text[:position] + draw(st.sampled_from(MUTATIONS)) + text[position:]
            else:
                text = text[:position] + text[position + draw(st.integers(1, 5)) :]
    return text


# --- the workspace -------------------------------------------------------------------------------


@pytest.fixture
def work(tmp_path: Path) -> Path:
    for name, code in MARKERS.items():
        marker_step(tmp_path, name, exit_code=code)
    (tmp_path / "conf").mkdir()
    (tmp_path / "tasks").mkdir()
    return tmp_path


def write_document(work: Path, text: str) -> Path:
    path = work / "conf" / "config.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    (work / "ran.txt").unlink(missing_ok=True)
    return path


def marker_name(work: Path, step: Step) -> str:
    target = os.path.realpath(work / step.path)
    for name in MARKERS:
        if target == os.path.realpath(work / name):
            return name
    raise AssertionError(f"{step.label} resolved to {target}, which is not one of the marker scripts")


TEXT_TYPES = (str, FromEnvironment)


def check_pipeline(pipeline: object, work: Path) -> None:
    """What any loaded config must be: plain frozen records that can be run as they are."""
    assert isinstance(pipeline, Pipeline)
    assert isinstance(pipeline.steps, tuple) and pipeline.steps
    assert [step.number for step in pipeline.steps] == list(range(1, len(pipeline.steps) + 1))
    for step in pipeline.steps:
        assert isinstance(step, Step)
        # Plain text, or text that remembers it was read from the environment (lynx.records.FromEnvironment).
        assert type(step.script) in TEXT_TYPES and type(step.path) in TEXT_TYPES
        assert os.path.isfile(work / step.path)
        assert isinstance(step.arguments, tuple)
        for word in step.arguments:
            assert type(word) in TEXT_TYPES
            # An argument the OS cannot pass would only fail once the step starts, after others ran.
            assert "\x00" not in word, f"{step.label}: an argument with a NUL byte was accepted"
    if pipeline.schedule is not None:
        assert isinstance(pipeline.schedule, Schedule)
        pipeline.schedule.trigger()


def load_or_error(config: Path, work: Path) -> Pipeline | ConfigError:
    try:
        pipeline = load_pipeline(config, cwd=str(work))
    except ConfigError as error:
        message = error.format_message()
        assert message and "\n" not in message, f"not one line: {message!r}"
        return error
    check_pipeline(pipeline, work)
    return pipeline


def oracle(config: Path, work: Path) -> Pipeline | ConfigError:
    """What the loader makes of the config, to pick the mode and predict which steps run."""
    try:
        return load_pipeline(config, cwd=str(work))
    except ConfigError as error:
        return error


def report(capsys: pytest.CaptureFixture[str], name: str, **counts: int) -> None:
    with capsys.disabled():
        print(f"\n[fuzz] {name}: " + ", ".join(f"{key}={value}" for key, value in counts.items()))


# --- the properties ------------------------------------------------------------------------------


def test_the_loader_returns_a_pipeline_or_raises_config_error(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=LOADER_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )
    @given(text=documents())
    @example(text="steps:\n  - script: ok.py\n    arguments: [\"--x 'two words'\", 7]\n")
    @example(text="steps:\n  - script: ok.py\n    arguments: [a\x00b]\n")
    @example(text='steps:\n  - script: ok.py\n    arguments: ["nul\\0byte"]\n')
    def check(text: str) -> None:
        COUNTS["loader examples"] += 1
        outcome = load_or_error(write_document(work, text), work)
        outcomes["loaded" if isinstance(outcome, Pipeline) else "refused"] += 1

    check()

    report(capsys, "load_pipeline in-process", examples=COUNTS["loader examples"], **outcomes)
    assert COUNTS["loader examples"] > 0
    # The generator must reach both sides, or the property says little.
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0


def test_the_cli_exits_0_1_or_2_without_traceback_and_runs_nothing_from_a_bad_config(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exits: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=CLI_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )
    @given(text=documents())
    @example(text="steps:\n  - script: ok.py\n    arguments: [\"--x 'two words' Łódź\", 42]\n")
    @example(
        text=(
            "configs:\n  - s: &a\n      - script: fail.py\n  - t:\n    - &b\n      script: ok.py\n"
            "steps:\n  - <<: *b\n  - <<: *a\n  - <<: *b\n"
        )
    )
    @example(text="cron:\n  second: '*/2'\nsteps:\n  - script: sub dir/ünï ok.py\n    arguments: ['a;b', '$HOME']\n")
    @example(text='steps:\n  - script: ok.py\n  - script: ok.py\n    arguments: ["nul\\0byte"]\n')
    @example(text="steps:\n  - script: ok.py\n  - script: -dash.py\n    arguments: [--x]\n")
    def check(text: str) -> None:
        COUNTS["cli examples"] += 1
        config = write_document(work, text)
        expected = oracle(config, work)
        # A valid cron section with -ni would schedule forever: interactive mode runs once instead
        # (a failed step then meets end of input at the dialog and ends with exit 1).
        scheduled = isinstance(expected, Pipeline) and expected.schedule is not None
        mode = [] if scheduled else ["-ni"]
        try:
            result = run_lynx("start", "-cf", "conf/config.yaml", *mode, cwd=work, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"lynx did not finish on this config:\n{text}")
        output = result.stdout + result.stderr
        exits[str(result.returncode)] += 1

        assert result.returncode in (0, 1, 2), output
        assert "Traceback" not in output, output
        if result.returncode == 2:
            assert ran(work) == [], output
            errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
            assert len(errors) == 1, output
            assert "Processing Step" not in result.stdout
        # The loader and the command agree on what is valid.
        assert (result.returncode == 2) == isinstance(expected, ConfigError), output
        if isinstance(expected, Pipeline):
            names = [marker_name(work, step) for step in expected.steps]
            lines = [" ".join([name, *step.arguments]) + "\n" for name, step in zip(names, expected.steps)]
            failing = [index for index, name in enumerate(names) if MARKERS[name] != 0]
            if failing:
                lines = lines[: failing[0] + 1]
            ran_text = (work / "ran.txt").read_bytes().decode("utf-8") if (work / "ran.txt").exists() else ""
            assert ran_text == "".join(lines), output  # in order, with the arguments exactly as written
            assert result.returncode == (1 if failing else 0), output

    check()

    report(capsys, "lynx start CLI", examples=COUNTS["cli examples"], **{f"exit {k}": v for k, v in exits.items()})
    assert COUNTS["cli examples"] > 0
    assert exits["0"] > 0 and exits["1"] > 0 and exits["2"] > 0
