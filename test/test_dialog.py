"""The interactive rerun dialog, in a real terminal (pexpect)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Iterator

import pexpect
import pytest
from conftest import clean_env, lynx_command, marker_step, ran, wait_for, write_config, write_script

RERUN_STEP = "Do you want to rerun this step? (y/n)"
RERUN_PIPELINE = "Do you want to rerun the whole pipeline from the beginning? (y/n)"
TIMEOUT = 30


def flaky_step(directory: Path, name: str = "flaky.py") -> Path:
    """A step that records itself in ran.txt, fails (exit 1) the first time and succeeds after."""
    return write_script(
        directory,
        name,
        f"""
        import os, sys
        with open("ran.txt", "a", encoding="utf-8") as handle:
            handle.write({name!r} + "\\n")
        count = int(open("count.txt").read()) + 1 if os.path.exists("count.txt") else 1
        with open("count.txt", "w") as handle:
            handle.write(str(count))
        print(f"flaky run {{count}}")
        sys.exit(1 if count == 1 else 0)
        """,
    )


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    """first.py (succeeds), flaky.py (fails once), last.py (succeeds)."""
    marker_step(tmp_path, "first.py")
    flaky_step(tmp_path)
    marker_step(tmp_path, "last.py")
    write_config(tmp_path, "steps:\n  - script: first.py\n  - script: flaky.py\n  - script: last.py\n")
    return tmp_path


@pytest.fixture
def spawned() -> Iterator[list[pexpect.spawn]]:
    """Terminals a test opens; closed (their Lynx ended) afterwards even on failure."""
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        if child.isalive():
            child.close(force=True)


def spawn(
    directory: Path, spawned: list[pexpect.spawn], *args: str, env: dict[str, str] | None = None
) -> pexpect.spawn:
    command = [*lynx_command(), "start", "-cf", "config.yaml", *args]
    child = pexpect.spawn(
        command[0],
        command[1:],
        cwd=str(directory),
        env=env or clean_env(),
        encoding="utf-8",
        codec_errors="replace",
        timeout=TIMEOUT,
        dimensions=(50, 200),
    )
    spawned.append(child)
    return child


def finish(child: pexpect.spawn) -> tuple[int, str]:
    """Read to the end; return (exit status, everything printed after the last expect)."""
    child.expect(pexpect.EOF)
    rest = child.before
    child.close()
    assert child.signalstatus is None, f"Lynx died of signal {child.signalstatus}"
    return child.exitstatus, rest


def test_yes_reruns_the_failed_step(pipeline: Path, spawned: list[pexpect.spawn]) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact("Step 2 (flaky.py) failed with exit code 1.")
    child.expect_exact(RERUN_STEP)
    child.sendline("y")
    child.expect_exact("Step 2 (flaky.py) completed successfully.")

    code, rest = finish(child)

    assert code == 0
    assert "Traceback" not in rest
    assert ran(pipeline) == ["first.py", "flaky.py", "flaky.py", "last.py"]


def test_no_then_yes_reruns_the_pipeline_from_step_one(pipeline: Path, spawned: list[pexpect.spawn]) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact(RERUN_STEP)
    child.sendline("n")
    child.expect_exact(RERUN_PIPELINE)
    child.sendline("y")
    child.expect_exact("Processing Step 1: first.py...")
    child.expect_exact("Step 2 (flaky.py) completed successfully.")

    code, rest = finish(child)

    assert code == 0
    assert "Traceback" not in rest
    assert ran(pipeline) == ["first.py", "flaky.py", "first.py", "flaky.py", "last.py"]


def test_no_then_no_exits_with_1(pipeline: Path, spawned: list[pexpect.spawn]) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact(RERUN_STEP)
    child.sendline("n")
    child.expect_exact(RERUN_PIPELINE)
    child.sendline("n")
    child.expect_exact("Exiting...")

    code, rest = finish(child)

    assert code == 1
    assert "Traceback" not in rest
    assert ran(pipeline) == ["first.py", "flaky.py"]


@pytest.mark.parametrize("yes", ["Y", "yes", "YES", "Yes"])
def test_yes_is_case_insensitive(pipeline: Path, spawned: list[pexpect.spawn], yes: str) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact(RERUN_STEP)
    child.sendline(yes)
    child.expect_exact("Step 2 (flaky.py) completed successfully.")

    code, _ = finish(child)

    assert code == 0
    assert ran(pipeline) == ["first.py", "flaky.py", "flaky.py", "last.py"]


@pytest.mark.parametrize("no", ["N", "no", "NO", "No"])
def test_no_is_case_insensitive(pipeline: Path, spawned: list[pexpect.spawn], no: str) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact(RERUN_STEP)
    child.sendline(no)
    child.expect_exact(RERUN_PIPELINE)
    child.sendline(no)
    child.expect_exact("Exiting...")

    code, _ = finish(child)

    assert code == 1
    assert ran(pipeline) == ["first.py", "flaky.py"]


def test_an_invalid_answer_asks_again(pipeline: Path, spawned: list[pexpect.spawn]) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact(RERUN_STEP)
    child.sendline("maybe")
    child.expect_exact(RERUN_STEP)
    assert ran(pipeline) == ["first.py", "flaky.py"]
    child.sendline("")
    child.expect_exact(RERUN_STEP)
    child.sendline("y")
    child.expect_exact("Step 2 (flaky.py) completed successfully.")

    code, _ = finish(child)

    assert code == 0
    assert ran(pipeline) == ["first.py", "flaky.py", "flaky.py", "last.py"]


def test_ctrl_d_at_the_prompt_ends_cleanly_with_1(pipeline: Path, spawned: list[pexpect.spawn]) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact(RERUN_STEP)
    child.sendeof()

    code, rest = finish(child)

    assert code == 1
    assert "Traceback" not in rest
    assert "EOFError" not in rest
    assert ran(pipeline) == ["first.py", "flaky.py"]


def test_ctrl_d_at_the_second_prompt_ends_cleanly_with_1(pipeline: Path, spawned: list[pexpect.spawn]) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact(RERUN_STEP)
    child.sendline("n")
    child.expect_exact(RERUN_PIPELINE)
    child.sendeof()

    code, rest = finish(child)

    assert code == 1
    assert "Traceback" not in rest
    assert ran(pipeline) == ["first.py", "flaky.py"]


def test_ctrl_c_at_the_prompt_exits_130(pipeline: Path, spawned: list[pexpect.spawn]) -> None:
    child = spawn(pipeline, spawned)
    child.expect_exact(RERUN_STEP)
    child.sendintr()

    code, rest = finish(child)

    assert code == 130
    assert "Traceback" not in rest
    assert "KeyboardInterrupt" not in rest
    assert ran(pipeline) == ["first.py", "flaky.py"]


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_progress_lines_are_colored_in_a_terminal(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    marker_step(tmp_path, "ok.py")
    write_config(tmp_path, "steps:\n  - script: ok.py\n")
    env = clean_env(TERM="xterm")
    del env["NO_COLOR"]

    child = spawn(tmp_path, spawned, env=env)
    code, output = finish(child)

    assert code == 0
    progress = next(line for line in output.splitlines() if "Processing Step 1: ok.py..." in line)
    assert ANSI.search(progress), repr(progress)
    done = next(line for line in output.splitlines() if "Step 1 (ok.py) completed successfully." in line)
    assert ANSI.search(done), repr(done)


def test_no_color_turns_color_off(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    marker_step(tmp_path, "ok.py")
    write_config(tmp_path, "steps:\n  - script: ok.py\n")

    child = spawn(tmp_path, spawned, env=clean_env(TERM="xterm", NO_COLOR="1"))
    code, output = finish(child)

    assert code == 0
    assert "Processing Step 1: ok.py..." in output
    assert "\x1b[" not in output


def test_failure_prompt_is_colored_without_no_color(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    marker_step(tmp_path, "bad.py", exit_code=2)
    write_config(tmp_path, "steps:\n  - script: bad.py\n")
    env = clean_env(TERM="xterm")
    del env["NO_COLOR"]

    child = spawn(tmp_path, spawned, env=env)
    child.expect(r"\x1b\[[0-9;]*m[^\n]*failed with exit code 2\.")
    child.expect_exact(RERUN_STEP)
    child.sendline("n")
    child.expect_exact(RERUN_PIPELINE)
    child.sendline("n")
    code, _ = finish(child)

    assert code == 1


# --- restarting many times must be a loop, not recursion --------------------------------------

RESTARTS = 60
# Stack frames allowed above the depth of the first prompt. A recursive restart adds at least one
# frame per restart, so RESTARTS restarts cannot fit; a loop never goes deeper than its first round
# (a step's output through logging is the deepest it gets, well within this margin).
FRAME_MARGIN = 30

# On SIGUSR1 (sent while Lynx waits at its first prompt), cap the stack at the current depth plus
# a margin. A real interpreter limit on the real Lynx: nothing of Lynx is replaced.
STACK_CAP = """
import os, signal, sys

def _cap_stack(signum, frame):
    depth = 1
    while frame is not None:
        depth += 1
        frame = frame.f_back
    sys.setrecursionlimit(depth + int(os.environ["LYNX_TEST_MARGIN"]))
    with open(os.environ["LYNX_TEST_CAPPED"], "w") as handle:
        handle.write(str(depth))

signal.signal(signal.SIGUSR1, _cap_stack)
"""


def test_restarting_the_pipeline_many_times_does_not_recurse(tmp_path: Path, spawned: list[pexpect.spawn]) -> None:
    marker_step(tmp_path, "first.py")
    marker_step(tmp_path, "always_fails.py", exit_code=1)
    write_config(tmp_path, "steps:\n  - script: first.py\n  - script: always_fails.py\n")
    site = tmp_path / "site"
    write_script(site, "sitecustomize.py", STACK_CAP)
    capped = tmp_path / "capped.txt"
    env = clean_env(
        PYTHONPATH=os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p),
        LYNX_TEST_MARGIN=str(FRAME_MARGIN),
        LYNX_TEST_CAPPED=str(capped),
    )

    child = spawn(tmp_path, spawned, env=env)
    child.expect_exact(RERUN_STEP)
    os.kill(child.pid, signal.SIGUSR1)
    wait_for(capped.exists, timeout=TIMEOUT)
    for restart in range(RESTARTS):
        if restart:
            child.expect_exact(RERUN_STEP)
        child.sendline("n")
        child.expect_exact(RERUN_PIPELINE)
        child.sendline("y")
        child.expect_exact("Processing Step 1: first.py...")
    child.expect_exact(RERUN_STEP)
    child.sendline("n")
    child.expect_exact(RERUN_PIPELINE)
    child.sendline("n")
    child.expect_exact("Exiting...")
    code, rest = finish(child)

    assert code == 1
    assert "RecursionError" not in rest
    assert "Traceback" not in rest
    assert ran(tmp_path) == ["first.py", "always_fails.py"] * (RESTARTS + 1)
