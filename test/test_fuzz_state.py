"""Property-based fuzzing of what Lynx reads back from ``.lynx/`` (issue 14 #6): scheduler records and
history lines, damaged any way JSON allows (and some ways it does not), never end a reader in a traceback.

Records and runs are generated as real ones with fields replaced, added or dropped, values of any JSON
type (deep nests, huge and non-finite numbers, odd times), sometimes mangled as text. The readers run in
process (``read_entry``, ``read_runs``, and the ``status``, ``logs`` and ``history`` commands writing to
buffers), then the CLI on a few of them.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import run_lynx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lynx import schema, state
from lynx.commands.history import history
from lynx.commands.logs import logs
from lynx.commands.status import status
from lynx.errors import LynxError
from lynx.history import read_runs

RECORD_EXAMPLES = 1500
HISTORY_EXAMPLES = 800
CLI_EXAMPLES = 40
COUNTS: collections.Counter[str] = collections.Counter()
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

GOOD_RECORD: dict[str, Any] = {
    "name": "fuzz",
    "pid": 2_000_000_000,  # no process has it
    "cmdline": ["/usr/bin/python3", "-c", "x", "start", "--detached"],
    "process_name": "python3",
    "exe": "/usr/bin/python3",
    "status": "sleeping",
    "username": "me",
    "create_time": 1796411781.35,
    "start_ticks": 194235,
    "boot_id": "1559c3ac",
    "config_file": "/tmp/x/conf/fuzz.yaml",
    "log_file": "/tmp/x/fuzz.log",
    "started_at": "2026-12-04T19:16:21+00:00",
    "schedule": "second=*/2",
    "next_run": "2026-12-04T19:16:26+00:00",
    "run_id": "20261204T191624-6f1823b2bf2d",
    "run_started_at": "2026-12-04T19:16:24+00:00",
    "current_step": 2,
    "step_started_at": "2026-12-04T19:16:25+00:00",
    "last_run": {
        "run_id": "20261204T191622-6f1823b2bf2d",
        "started_at": "2026-12-04T19:16:22+00:00",
        "ended_at": "2026-12-04T19:16:23+00:00",
        "duration_s": 0.019,
        "result": "ok",
        "failed_step": None,
    },
    "updated_at": "2026-12-04T19:16:25+00:00",
    "directory": {"path": "/tmp/x", "device": 1, "inode": 2},
    "options": {"config_file": "conf/fuzz.yaml", "name": "fuzz", "log_file": "fuzz.log", "keep_running": False},
    "command_line": ["lynx", "start", "-bg", "-cf", "conf/fuzz.yaml"],
    "ended": {"at": "2026-12-04T19:16:30+00:00", "reason": "error", "exit_code": 2, "error": "Error: x"},
    "stopped_at": None,
}
GOOD_RUN: dict[str, Any] = {
    "run_id": "20261122T235942-8993d6e8f8c7",
    "name": "fuzz",
    "config_file": "/tmp/ex/conf/fuzz.yaml",
    "config_sha256": "3053c7a7",
    "host": "vm",
    "user": "root",
    "python": "/usr/bin/python3",
    "lynx_version": "1.0.0",
    "started_at": "2026-11-22T23:59:42.236+00:00",
    "ended_at": "2026-11-22T23:59:42.552+00:00",
    "duration_s": 0.316,
    "result": "failed",
    "failed_step": 1,
    "steps": [
        {
            "number": 1,
            "script": "tasks/a.py",
            "name": None,
            "argv": ["/usr/bin/python3", "tasks/a.py"],
            "attempts": 2,
            "returncode": -9,
            "duration_s": 0.074,
            "result": "failed",
            "timed_out": True,
            "job_id": "12",
            "node": "n1",
        }
    ],
}
STAMPS = (
    "2026-12-04T19:16:21+00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2026-12-04",
    "2026-12-04T19:16:21",
    "2026-12-04T19:16:21.123456+05:30",
    "2026-13-40T99:99:99",
    "",
)
NUMBERS = (0, -1, 1, 2**31, 2**63, 10**30, 0.5, -0.0, 1e308, 1e-320)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from(NUMBERS)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(STAMPS)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Written into the JSON text as they are: what json.dumps never writes.
RAW = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "[" * 5000, '"\\ud800"', "{", "tru")


@st.composite
def damaged(draw: Any, good: dict[str, Any]) -> str:
    """``good`` with keys (also nested ones) replaced, dropped or added, as JSON text, sometimes mangled."""
    data = json.loads(json.dumps(good))
    placeholders = {}
    for _ in range(draw(st.integers(0, 4))):
        target = data
        key = draw(st.sampled_from([*sorted(data), "extra"]))
        if isinstance(data.get(key), dict) and draw(st.booleans()):
            target = data[key]
            key = draw(st.sampled_from([*sorted(target), "extra"]))
        elif isinstance(data.get(key), list) and data[key] and isinstance(data[key][0], dict) and draw(st.booleans()):
            target = data[key][0]
            key = draw(st.sampled_from([*sorted(target), "extra"]))
        action = draw(st.sampled_from(["replace", "replace", "drop", "raw"]))
        if action == "drop":
            target.pop(key, None)
        elif action == "raw":
            mark = f"@@raw{len(placeholders)}@@"
            placeholders[json.dumps(mark)] = draw(st.sampled_from(RAW))
            target[key] = mark
        else:
            target[key] = draw(VALUES)
    text = json.dumps(data)
    for mark, raw in placeholders.items():
        text = text.replace(mark, raw)
    cut = draw(st.sampled_from([None, None, None, "cut", "prefix"]))
    if cut == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif cut == "prefix":
        text = draw(st.sampled_from(["[", "{", "", "\x00", "\ufeff"])) + text
    return text


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


def check_record_readers(folder: Path, text: str) -> str:
    """Every reader of a record on ``text``: it is shown, or named in one warning; never an exception."""
    path = folder / ".lynx" / "schedulers" / "fuzz.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    here = os.stat(folder)
    # The record belongs here unless the fuzzer changed its directory.
    text = text.replace('"device": 1, "inode": 2', f'"device": {here.st_dev}, "inode": {here.st_ino}')
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        entry = state.read_entry(path)
    except LynxError:
        outcome = "refused"
    else:
        outcome = "read"
        assert schema.entry_problem(entry.to_json()) is None
    out, err = io.StringIO(), io.StringIO()
    code = status(as_json=True, stdout=out, stderr=err, directory=folder, now=datetime.now().astimezone())
    rows = json.loads(out.getvalue())
    json.dumps(rows, allow_nan=False)  # what --json prints is JSON
    assert code == 1
    if outcome == "read" and not rows:  # a record of another directory: left out, and said so
        assert "not of this directory" in err.getvalue() and err.getvalue().count("Warning: ") == 1
        outcome = "elsewhere"
    elif outcome == "read":
        assert len(rows) == 1 and rows[0]["state"] in ("ended", "dead"), rows
        table = io.StringIO()
        status(stdout=table, stderr=err, directory=folder)
        assert table.getvalue().startswith("NAME")
    else:
        assert rows == [] and err.getvalue().count("Warning: ") == 1, err.getvalue()
    with contextlib.suppress(LynxError):
        logs("fuzz", stdout=io.BytesIO(), stderr=io.StringIO(), directory=folder)
    return outcome


def test_scheduler_records_are_read_or_refused_never_a_traceback(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes: collections.Counter[str] = collections.Counter()

    @settings(FUZZ, max_examples=RECORD_EXAMPLES)
    @given(text=damaged(GOOD_RECORD))
    @example(text=json.dumps({**GOOD_RECORD, "last_run": "oops"}))
    @example(text=json.dumps({**GOOD_RECORD, "schedule": 5}))
    @example(text=json.dumps({**GOOD_RECORD, "config_file": ["a"]}))
    @example(text=json.dumps(GOOD_RECORD).replace('"duration_s": 0.019', '"duration_s": 1e400'))
    @example(text=json.dumps({**GOOD_RECORD, "started_at": "0001-01-01T00:00:00+14:00"}))
    @example(text="[" * 100_000)
    def check(text: str) -> None:
        outcomes[check_record_readers(folder, text)] += 1

    check()
    with capsys.disabled():
        print(f"\n[fuzz] scheduler records: {dict(outcomes)}")
    assert outcomes["read"] > 0 and outcomes["refused"] > 0


def check_history_readers(folder: Path, lines: list[str]) -> int:
    """``read_runs`` and ``lynx history`` (text and JSON, all and by name) on these lines: never an exception."""
    path = folder / ".lynx" / "runs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    runs = read_runs(str(folder))
    for run in runs:
        assert schema.run_problem(run) is None
    for as_json in (False, True):
        for name in (None, "fuzz"):
            out = io.StringIO()
            assert history(limit=0, as_json=as_json, name=name, directory=str(folder), stdout=out) == 0
            if as_json:
                json.loads(out.getvalue())
    return len(runs)


def test_history_lines_are_shown_or_skipped_never_a_traceback(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shown: collections.Counter[str] = collections.Counter()

    @settings(FUZZ, max_examples=HISTORY_EXAMPLES)
    @given(lines=st.lists(damaged(GOOD_RUN), min_size=1, max_size=4))
    @example(lines=["[" * 100_000])
    @example(lines=[json.dumps(GOOD_RUN).replace('"duration_s": 0.316', '"duration_s": 1e400')])
    @example(lines=[json.dumps(GOOD_RUN).replace('"duration_s": 0.316', '"duration_s": NaN')])
    @example(lines=[json.dumps({**GOOD_RUN, "steps": [{**GOOD_RUN["steps"][0], "duration_s": 1e308}]})])
    def check(lines: list[str]) -> None:
        count = check_history_readers(folder, lines)
        shown["some shown" if count else "none shown"] += 1

    check()
    with capsys.disabled():
        print(f"\n[fuzz] history lines: {dict(shown)}")
    assert shown["some shown"] > 0 and shown["none shown"] > 0


def test_the_cli_reads_damaged_state_without_a_traceback(folder: Path) -> None:
    """The same through the real commands, on fewer examples."""

    @settings(FUZZ, max_examples=CLI_EXAMPLES)
    @given(record=damaged(GOOD_RECORD), run=damaged(GOOD_RUN))
    def check(record: str, run: str) -> None:
        (folder / ".lynx" / "schedulers").mkdir(parents=True, exist_ok=True)
        (folder / ".lynx" / "schedulers" / "fuzz.json").write_text(record, errors="surrogatepass")
        (folder / ".lynx" / "runs.jsonl").write_text(run + "\n", errors="surrogatepass")
        for command in (["status"], ["status", "--json"], ["history"], ["history", "--json"], ["logs", "fuzz"]):
            result = run_lynx(*command, cwd=folder, timeout=30)
            assert result.returncode in (0, 1), (command, result.stdout + result.stderr)
            assert "Traceback" not in result.stdout + result.stderr, (command, record, run)

    check()
    assert os.path.exists(folder / ".lynx" / "runs.jsonl")
