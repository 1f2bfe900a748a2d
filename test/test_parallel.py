"""Steps side by side (issue 18): ``needs``, ``max_parallel`` and ``matrix``, end to end with real processes.

Overlap is proved from the start and end times the history records, never from sleeps.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pexpect
import psutil
import pytest
from conftest import clean_env, lynx_command, ran, run_lynx, wait_for, write_config, write_script

TIMEOUT = 60


def step_script(directory: Path, name: str, *, seconds: float = 0.0, exit_code: int = 0) -> Path:
    """A step that appends its name and argv to ran.txt, sleeps ``seconds``, and exits with ``exit_code``."""
    return write_script(
        directory,
        name,
        f"""
        import os, sys, time
        with open({str(directory / "ran.txt")!r}, "a", encoding="utf-8") as handle:
            handle.write(" ".join([{name!r}] + sys.argv[1:]) + "\\n")
        print("{name} starts", flush=True)
        time.sleep({seconds})
        print("{name} ends", flush=True)
        sys.exit({exit_code})
        """,
    )


def last_run(directory: Path) -> dict[str, Any]:
    lines = (directory / ".lynx" / "runs.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1])


def span(run: dict[str, Any], name: str) -> tuple[datetime, datetime]:
    (step,) = [step for step in run["steps"] if step["name"] == name]
    return datetime.fromisoformat(step["started_at"]), datetime.fromisoformat(step["ended_at"])


def overlap(one: tuple[datetime, datetime], other: tuple[datetime, datetime]) -> bool:
    return one[0] < other[1] and other[0] < one[1]


DIAMOND = """
    {limit}
    steps:
      - script: a.py
        name: a
      - script: b.py
        name: b
        needs: [a]
      - script: c.py
        name: c
        needs: [a]
      - script: d.py
        name: d
        needs: [b, c]
    """


@pytest.fixture
def diamond(tmp_path: Path) -> Path:
    step_script(tmp_path, "a.py")
    step_script(tmp_path, "b.py", seconds=1.5)
    step_script(tmp_path, "c.py", seconds=1.5)
    step_script(tmp_path, "d.py")
    return tmp_path


def test_a_diamond_runs_its_two_branches_side_by_side(diamond: Path) -> None:
    write_config(diamond, DIAMOND.format(limit="max_parallel: 4"))

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=diamond)

    assert result.returncode == 0, result.stdout + result.stderr
    run = last_run(diamond)
    a, b, c, d = (span(run, name) for name in "abcd")
    assert a[1] <= b[0] and a[1] <= c[0]
    assert overlap(b, c)
    assert max(b[1], c[1]) <= d[0]
    # Each output line carries its step's tag; the progress lines are as ever.
    assert "[b] b.py starts" in result.stdout and "[c] c.py ends" in result.stdout
    assert "Processing Step 2: b..." in result.stdout
    assert "-------------------- Output --------------------" not in result.stdout
    assert re.search(r"Step 2 \(b\) \.+ ok +\d+\.\d\d s  \+\d+\.\d\d s  \|[ #]{30}\|", result.stdout)


def test_max_parallel_1_runs_one_step_at_a_time(diamond: Path) -> None:
    write_config(diamond, DIAMOND.format(limit="max_parallel: 1"))

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=diamond)

    assert result.returncode == 0, result.stdout + result.stderr
    run = last_run(diamond)
    assert not overlap(span(run, "b"), span(run, "c"))
    assert [line.split()[0] for line in ran(diamond)] == ["a.py", "b.py", "c.py", "d.py"]
    # One step at a time: the output as a plain chain's, framed and untagged.
    assert "[b]" not in result.stdout
    assert "-------------------- Output --------------------" in result.stdout


def test_a_matrix_makes_one_step_per_combination_with_its_values(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "train.py",
        f"""
        import os, sys
        with open({str(tmp_path / "ran.txt")!r}, "a", encoding="utf-8") as handle:
            handle.write(" ".join(sys.argv[1:] + [os.environ["LR"], os.environ["SEED"]]) + "\\n")
        """,
    )
    write_config(
        tmp_path,
        """
        max_parallel: 3
        steps:
          - script: train.py
            name: train
            matrix: {lr: [0.10, 0.01], seed: [1, 2, 3]}
            arguments: ["--lr ${matrix.lr} --seed ${matrix.seed}"]
            env: {LR: "${matrix.lr}", SEED: "seed-${matrix.seed}"}
        """,
    )

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    expected = {f"--lr {lr} --seed {seed} {lr} seed-{seed}" for lr in ("0.10", "0.01") for seed in (1, 2, 3)}
    assert set(ran(tmp_path)) == expected and len(ran(tmp_path)) == 6
    assert "Step 1 (train (lr=0.10, seed=2)) completed successfully." in result.stdout
    run = last_run(tmp_path)
    assert {json.dumps(step["matrix"]) for step in run["steps"]} == {
        json.dumps({"lr": lr, "seed": str(seed)}) for lr in ("0.10", "0.01") for seed in (1, 2, 3)
    }


def test_a_failed_branch_lets_the_running_one_finish_starts_nothing_new_and_skips_its_dependents(
    tmp_path: Path,
) -> None:
    step_script(tmp_path, "a.py")
    step_script(tmp_path, "bad.py", exit_code=3)
    step_script(tmp_path, "slow.py", seconds=1.5)
    step_script(tmp_path, "after_slow.py")
    step_script(tmp_path, "join.py")
    write_config(
        tmp_path,
        """
        max_parallel: 4
        steps:
          - {script: a.py, name: a}
          - {script: bad.py, name: bad, needs: [a]}
          - {script: slow.py, name: slow, needs: [a]}
          - {script: after_slow.py, name: after_slow, needs: [slow]}
          - {script: join.py, name: join, needs: [bad, slow]}
        """,
    )

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert sorted(line.split()[0] for line in ran(tmp_path)) == ["a.py", "bad.py", "slow.py"]
    assert "Step 3 (slow) completed successfully." in result.stdout
    assert "Skipping Step 5 (join): it needs Step 2 (bad), which did not succeed." in result.stdout
    run = last_run(tmp_path)
    assert run["result"] == "failed" and run["failed_step"] == 2
    results = {step["name"]: step["result"] for step in run["steps"]}
    assert results == {"a": "ok", "bad": "failed", "slow": "ok", "join": "skipped"}


def test_continue_on_error_lets_the_others_go_on_and_skips_what_needs_the_failed_step(tmp_path: Path) -> None:
    step_script(tmp_path, "a.py")
    step_script(tmp_path, "bad.py", exit_code=1)
    step_script(tmp_path, "other.py")
    step_script(tmp_path, "needs_bad.py")
    write_config(
        tmp_path,
        """
        max_parallel: 2
        steps:
          - {script: a.py, name: a}
          - {script: bad.py, name: bad, needs: [a], continue_on_error: true}
          - {script: other.py, name: other, needs: [a]}
          - {script: needs_bad.py, name: needs_bad, needs: [bad]}
        """,
    )

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert sorted(line.split()[0] for line in ran(tmp_path)) == ["a.py", "bad.py", "other.py"]
    assert "Step 2 (bad) failed; the steps that do not need it go on (continue_on_error)." in result.stdout
    assert re.search(r"Step 4 \(needs_bad\) \.+ skipped .*\(needs step 2\)", result.stdout)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _three_holding_steps(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], Path, list[psutil.Process]]:
    """Lynx running three steps side by side, each holding a child: Lynx, its output file, and the six
    processes of the steps' trees."""
    write_script(
        tmp_path,
        "hold.py",
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(f"holding {child.pid}", flush=True)
        time.sleep(120)
        """,
    )
    write_config(tmp_path, "max_parallel: 3\nsteps:\n  - {script: hold.py, name: hold, matrix: {i: [1, 2, 3]}}\n")
    out = tmp_path / "out.txt"
    with open(out, "w", encoding="utf-8") as handle:
        lynx = subprocess.Popen(
            [*lynx_command(), "start", "-ni", "-cf", "config.yaml"],
            cwd=tmp_path, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=clean_env(),
        )  # fmt: skip
    started.append(lynx)
    wait_for(lambda: out.read_text(encoding="utf-8").count("holding") == 3, timeout=TIMEOUT)
    tree = psutil.Process(lynx.pid).children(recursive=True)
    steps = [each for each in tree if each.name() != "lynx-watchdog"]
    assert len(steps) >= 6
    return lynx, out, steps


def test_ctrl_c_with_three_steps_running_ends_every_tree(tmp_path: Path, started: list[subprocess.Popen[str]]) -> None:
    lynx, out, tree = _three_holding_steps(tmp_path, started)

    lynx.send_signal(signal.SIGINT)

    assert lynx.wait(timeout=TIMEOUT) == 130
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not [each for each in alive if each.status() != psutil.STATUS_ZOMBIE]
    text = out.read_text(encoding="utf-8")
    assert text.count("interrupted (Ctrl+C): ending it (SIGINT") == 3
    assert "Lynx was interrupted (Ctrl+C) and has stopped." in text


def test_the_dialog_reruns_a_failed_parallel_step_and_what_needs_it(tmp_path: Path) -> None:
    step_script(tmp_path, "a.py")
    step_script(tmp_path, "other.py", seconds=0.5)
    write_script(
        tmp_path,
        "flaky.py",
        """
        import os, sys
        with open("ran.txt", "a", encoding="utf-8") as handle:
            handle.write("flaky.py\\n")
        failed_before = os.path.exists("failed-once")
        open("failed-once", "w").close()
        sys.exit(0 if failed_before else 1)
        """,
    )
    step_script(tmp_path, "last.py")
    write_config(
        tmp_path,
        """
        max_parallel: 2
        steps:
          - {script: a.py, name: a}
          - {script: flaky.py, name: flaky, needs: [a]}
          - {script: other.py, name: other, needs: [a]}
          - {script: last.py, name: last, needs: [flaky, other]}
        """,
    )
    child = pexpect.spawn(
        lynx_command()[0], [*lynx_command()[1:], "start", "-cf", "config.yaml"],
        cwd=str(tmp_path), env=clean_env(), encoding="utf-8", timeout=TIMEOUT,
    )  # fmt: skip
    try:
        child.expect_exact("Do you want to rerun this step? (y/n)")
        child.sendline("y")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)

    assert child.exitstatus == 0
    # a and other succeeded once and are not run again; flaky runs twice, then last.
    assert sorted(line.split()[0] for line in ran(tmp_path)) == [
        "a.py", "flaky.py", "flaky.py", "last.py", "other.py",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            "  - {script: s.py, name: a, needs: [c]}\n  - {script: s.py, name: b, needs: [a]}\n"
            "  - {script: s.py, name: c, needs: [b]}\n",
            "the steps' 'needs' make a cycle: step 1 (a) → step 3 (c) → step 2 (b) → step 1 (a) (each needs the next)",
        ),
        (
            "  - {script: s.py, name: a}\n  - {script: s.py, name: b, needs: [train]}\n",
            "step 2 (b): 'needs': no step is named 'train' (named steps: 'a', 'b')",
        ),
        ("  - {script: s.py, name: a, needs: [a]}\n", "step 1 (a): 'needs' names the step itself"),
        (
            "  - {script: s.py, matrix: {lr: []}}\n",
            "step 1: matrix: 'lr' must be a non-empty list of values, not an empty list",
        ),
        (
            "  - {script: s.py, matrix: {a: [" + ", ".join(map(str, range(5001))) + "], b: [1, 2]}}\n",
            "step 1: 'matrix' makes more than 10,000 combinations; split the sweep",
        ),
        (
            "  - {script: s.py, arguments: ['${matrix.lr}']}\n",
            "step 1: '${matrix.lr}' is used, but the step has no 'matrix'",
        ),
    ],
)
def test_bad_needs_and_matrices_are_refused_up_front(tmp_path: Path, steps: str, message: str) -> None:
    step_script(tmp_path, "s.py")
    write_config(tmp_path, "steps:\n" + steps)

    for command in (["start", "-ni"], ["validate"]):
        result = run_lynx(*command, "-cf", "config.yaml", cwd=tmp_path)

        assert result.returncode == 2
        assert result.stderr == f"Error: config.yaml: {message}\n"
    assert ran(tmp_path) == []


def test_interleaved_output_lines_are_never_broken(tmp_path: Path) -> None:
    """Two steps write long lines in small pieces at once: every line arrives whole, tagged, in order."""
    write_script(
        tmp_path,
        "chatty.py",
        """
        import os, sys
        name = sys.argv[1]
        for number in range(300):
            line = f"{name} line {number} " + "x" * 200 + "\\n"
            for start in range(0, len(line), 37):
                os.write(1, line[start : start + 37].encode())
        """,
    )
    write_config(
        tmp_path,
        "max_parallel: 2\nsteps:\n  - {script: chatty.py, name: talk, matrix: {who: [left, right]},"
        " arguments: ['${matrix.who}']}\n",
    )

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", "lynx.log", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    log = (tmp_path / "lynx.log").read_text(encoding="utf-8")
    for text in (result.stdout, log):
        for who in ("left", "right"):
            lines = re.findall(rf"\[talk who={who}\] (.*)", text)
            assert lines == [f"{who} line {number} " + "x" * 200 for number in range(300)]


def test_steps_that_need_each_other_in_a_chain_have_no_tags(tmp_path: Path) -> None:
    step_script(tmp_path, "a.py")
    step_script(tmp_path, "b.py")
    write_config(tmp_path, "steps:\n  - {script: a.py, name: a}\n  - {script: b.py, name: b, needs: [a]}\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0
    assert "[a]" not in result.stdout and "-------------------- Output --------------------" in result.stdout


def test_validate_shows_the_plan_in_waves(diamond: Path) -> None:
    write_config(diamond, DIAMOND.format(limit="max_parallel: 2"))

    result = run_lynx("validate", "-cf", "config.yaml", cwd=diamond)

    assert result.returncode == 0
    assert "  needs: Step 2 (b), Step 3 (c)\n" in result.stdout
    assert result.stdout.endswith(
        "Plan: at most 2 steps at once (max_parallel):\n"
        "  wave 1: Step 1 (a)\n"
        "  wave 2: Step 2 (b), Step 3 (c)\n"
        "  wave 3: Step 4 (d)\n"
    )


def test_a_step_that_needs_a_matrix_step_waits_for_all_its_combinations(tmp_path: Path) -> None:
    step_script(tmp_path, "sweep.py", seconds=0.3)
    step_script(tmp_path, "report.py")
    write_config(
        tmp_path,
        """
        max_parallel: 4
        steps:
          - {script: sweep.py, name: sweep, matrix: {k: [1, 2, 3]}, arguments: ['${matrix.k}']}
          - {script: report.py, name: report, needs: [sweep]}
        """,
    )

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0
    run = last_run(tmp_path)
    report = span(run, "report")
    sweeps = [step for step in run["steps"] if step["number"] == 1]
    assert len(sweeps) == 3
    assert all(datetime.fromisoformat(step["ended_at"]) <= report[0] for step in sweeps)


def test_lynx_killed_with_three_steps_running_leaves_none_of_them(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    """The watchdog knows every step that runs side by side: SIGKILL of Lynx ends all three trees."""
    lynx, _, steps = _three_holding_steps(tmp_path, started)

    lynx.kill()
    lynx.wait(timeout=TIMEOUT)

    _, alive = psutil.wait_procs(steps, timeout=15)
    assert not [each for each in alive if each.status() != psutil.STATUS_ZOMBIE]


def test_tagged_output_keeps_windows_line_ends_and_progress_bars_as_lines(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "crlf.py",
        """
        import os, time
        os.write(1, b"first\\r\\nsecond\\r\\n")
        time.sleep(0.2)
        os.write(1, b"10%\\r50%\\r100%\\r\\n")
        """,
    )
    write_config(tmp_path, "max_parallel: 2\nsteps:\n  - {script: crlf.py, name: w, matrix: {i: [1, 2]}}\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0
    for i in (1, 2):
        assert re.findall(rf"^\[w i={i}\] (.*)$", result.stdout, re.M) == ["first", "second", "10%", "50%", "100%"]
