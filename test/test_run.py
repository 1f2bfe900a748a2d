"""End to end: the real ``lynx start`` running real step scripts, as a user meets it."""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Iterator

import psutil
import pytest
from conftest import REPO, clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config, write_script

OUTPUT_HEAD = "-------------------- Output --------------------"
OUTPUT_FOOT = "-" * 48
EXAMPLE_STEPS = ("tasks/preprocess.py", "tasks/train.py", "tasks/validate.py", "tasks/deploy.py")


def without_cron(text: str) -> str:
    """The example config minus its ``cron:`` section, for a one-shot -ni run."""
    stripped = re.sub(r"^cron:[^\n]*\n(?:[ \t]+[^\n]*\n|[ \t]*\n)*", "", text, flags=re.MULTILINE)
    assert not re.search(r"^cron:", stripped, flags=re.MULTILINE)
    return stripped


def copy_example(directory: Path) -> Path:
    """Copy the bundled example (conf/, tasks/, data/) into ``directory``; its config without cron."""
    for name in ("conf", "tasks", "data"):
        shutil.copytree(REPO / name, directory / name, ignore=shutil.ignore_patterns("__pycache__"))
    config = directory / "conf" / "config.yaml"
    config.write_text(without_cron(config.read_text(encoding="utf-8")), encoding="utf-8")
    return config


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


class LineReader:
    """Collect a pipe's lines in a thread, so a test can wait for one with a bounded wait."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.seen: list[bytes] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self.lines.put(line)

    def wait_for_line(self, text: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return True
        return False


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Lynx processes a test starts with Popen; killed (by PID) afterwards if still running."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def kill_if_alive(pid: int, create_time: float) -> None:
    """Clean-up only: kill the step our test started, if that very process is still there."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) < 0.01:
            process.kill()
    except psutil.Error:
        pass


def gone(pid: int, create_time: float) -> bool:
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - create_time) >= 0.01 or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- the example pipeline -------------------------------------------------------------------


def test_example_pipeline_runs_every_step_in_order(tmp_path: Path) -> None:
    copy_example(tmp_path)

    result = run_lynx("start", "-ni", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    out = result.stdout
    positions = []
    for number, script in enumerate(EXAMPLE_STEPS, start=1):
        processing = f"Processing Step {number}: {script}..."
        completed = f"Step {number} ({script}) completed successfully."
        assert processing in out
        assert completed in out
        assert out.index(processing) < out.index(completed)
        positions += [out.index(processing), out.index(completed)]
    assert positions == sorted(positions)
    assert out.count(OUTPUT_HEAD) == 4
    # The steps' own output, each inside its step's frame.
    for number, text in enumerate(
        ("Read 8 records from data/dummy.data.", "Epoch 3/3", "The answer is still 42.", "Deployed the model"),
        start=1,
    ):
        frame_start = out.index(f"Processing Step {number}:")
        frame_end = out.index(f"Step {number} (")
        assert text in out[frame_start:frame_end]


# --- failures and order ---------------------------------------------------------------------


def test_steps_run_in_config_order(tmp_path: Path) -> None:
    for name in ("c.py", "a.py", "b.py"):
        marker_step(tmp_path, name)
    write_config(tmp_path, "steps:\n  - script: c.py\n  - script: a.py\n  - script: b.py\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == ["c.py", "a.py", "b.py"]
    out = result.stdout
    assert out.index("Processing Step 1: c.py...") < out.index("Processing Step 2: a.py...")
    assert out.index("Processing Step 2: a.py...") < out.index("Processing Step 3: b.py...")


def test_failing_step_ends_a_non_interactive_run(tmp_path: Path) -> None:
    marker_step(tmp_path, "ok.py")
    marker_step(tmp_path, "x.py", exit_code=3)
    marker_step(tmp_path, "later.py")
    write_config(tmp_path, "steps:\n  - script: ok.py\n  - script: x.py\n  - script: later.py\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert_clean(result)
    assert "Step 2 (x.py) failed with exit code 3." in result.stdout + result.stderr
    assert "Step 1 (ok.py) completed successfully." in result.stdout
    assert ran(tmp_path) == ["ok.py", "x.py"]
    assert "Processing Step 3" not in result.stdout
    assert "Do you want to rerun" not in result.stdout


# --- how a step is started ------------------------------------------------------------------

ARGV_STEP = """
import json, os, sys
with open(os.environ["ARGV_OUT"], "a", encoding="utf-8") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def test_arguments_reach_the_step_exactly_and_never_through_a_shell(tmp_path: Path) -> None:
    write_script(tmp_path / "my steps", "show args.py", ARGV_STEP)
    write_config(
        tmp_path,
        """
        steps:
          - script: my steps/show args.py
            arguments:
              - "--input_file data/dummy.data --forty_two 42"
          - script: my steps/show args.py
            arguments:
              - "--input_file data/dummy.data"
              - "--forty_two 42"
          - script: my steps/show args.py
            arguments:
              - "--title 'two words'"
              - '--note "double   quoted"'
              - "ünïcødé ✓"
          - script: my steps/show args.py
            arguments:
              - "$HOME ; rm -rf / | && > out.txt"
              - "'$(touch pwned.txt)' `id`"
        """,
    )
    argv_out = tmp_path / "argv.jsonl"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path, env=clean_env(ARGV_OUT=str(argv_out)))

    assert result.returncode == 0, result.stdout + result.stderr
    seen = [json.loads(line) for line in argv_out.read_text(encoding="utf-8").splitlines()]
    assert seen == [
        ["--input_file", "data/dummy.data", "--forty_two", "42"],
        ["--input_file", "data/dummy.data", "--forty_two", "42"],
        ["--title", "two words", "--note", "double   quoted", "ünïcødé", "✓"],
        ["$HOME", ";", "rm", "-rf", "/", "|", "&&", ">", "out.txt", "$(touch pwned.txt)", "`id`"],
    ]
    assert not (tmp_path / "out.txt").exists()
    assert not (tmp_path / "pwned.txt").exists()


ENV_STEP = """
import json, os, sys
with open("seen.json", "w", encoding="utf-8") as handle:
    json.dump({
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
        "marker": os.environ.get("LYNX_TEST_MARKER"),
    }, handle)
"""


def shebang_interpreter(command: list[str]) -> str:
    """The interpreter a console script runs with (its #! line), else the command's own interpreter."""
    first = Path(command[0])
    if len(command) == 1 and first.is_file():
        line = first.read_bytes().split(b"\n", 1)[0].decode()
        if line.startswith("#!"):
            return line[2:].strip().split()[0]
    return command[0]


@pytest.mark.parametrize("how", ["console script", "python -m lynx"])
def test_step_runs_with_lynx_interpreter_in_current_directory_unbuffered(tmp_path: Path, how: str) -> None:
    # The script sits next to the config (not in the working directory): it still runs in the cwd.
    write_script(tmp_path / "conf", "env_step.py", ENV_STEP)
    write_config(tmp_path / "conf", "steps:\n  - script: env_step.py\n")
    work = tmp_path / "work"
    work.mkdir()
    if how == "console script":
        command = lynx_command()
        expected_python = shebang_interpreter(command)
    else:
        command = [sys.executable, "-m", "lynx"]
        expected_python = sys.executable
    env = clean_env(LYNX_TEST_MARKER="passed on")
    assert "PYTHONUNBUFFERED" not in env

    result = subprocess.run(
        [*command, "start", "-ni", "-cf", str(tmp_path / "conf" / "config.yaml")],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads((work / "seen.json").read_text(encoding="utf-8"))
    assert seen["executable"] == expected_python
    assert Path(seen["cwd"]).resolve() == work.resolve()
    assert seen["unbuffered"] == "1"
    assert seen["marker"] == "passed on"


def test_relative_script_found_next_to_the_config_when_not_in_cwd(tmp_path: Path) -> None:
    marker_step(tmp_path / "conf", "beside.py")
    write_config(tmp_path / "conf", "steps:\n  - script: beside.py\n")

    result = run_lynx("start", "-ni", "-cf", "conf/config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path / "conf") == ["beside.py"]


def test_relative_script_in_cwd_wins_over_the_one_next_to_the_config(tmp_path: Path) -> None:
    write_script(tmp_path, "step.py", "open('which.txt', 'a').write('cwd\\n')\n")
    write_script(tmp_path / "conf", "step.py", "open('which.txt', 'a').write('config dir\\n')\n")
    write_config(tmp_path / "conf", "steps:\n  - script: step.py\n")

    result = run_lynx("start", "-ni", "-cf", "conf/config.yaml", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "which.txt").read_text() == "cwd\n"


def test_python_lynx_py_from_the_repository_root(tmp_path: Path) -> None:
    step = marker_step(tmp_path, "root.py")
    config = write_config(tmp_path, f"steps:\n  - script: {json.dumps(str(step))}\n")

    result = subprocess.run(
        [sys.executable, "lynx.py", "start", "-ni", "-cf", str(config)],
        cwd=REPO,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Step 1 (" in result.stdout
    assert ran(tmp_path) == ["root.py"]


def test_python_dash_m_lynx(tmp_path: Path) -> None:
    marker_step(tmp_path, "m.py")
    write_config(tmp_path, "steps:\n  - script: m.py\n")

    result = subprocess.run(
        [sys.executable, "-m", "lynx", "start", "-ni", "-cf", "config.yaml"],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Step 1 (m.py) completed successfully." in result.stdout
    assert ran(tmp_path) == ["m.py"]


# --- help and version -----------------------------------------------------------------------


def test_top_level_help(tmp_path: Path) -> None:
    result = run_lynx("--help", cwd=tmp_path)

    assert result.returncode == 0
    assert_clean(result)
    assert re.search(r"^\s+start\b", result.stdout, flags=re.MULTILINE)
    assert re.search(r"^\s+stop\b", result.stdout, flags=re.MULTILINE)


def test_start_help_lists_every_option_long_and_short(tmp_path: Path) -> None:
    result = run_lynx("start", "--help", cwd=tmp_path)

    assert result.returncode == 0
    assert_clean(result)
    options = [
        ("--config-file", "-cf"),
        ("--log-file", "-lf"),
        ("--log-level", "-ll"),
        ("--log-size", "-ls"),
        ("--log-backup-count", "-lbc"),
        ("--non-interactive", "-ni"),
        ("--keep-running", "-kr"),
        ("--background", "-bg"),
    ]
    for long, short in options:
        assert re.search(rf"(?<![\w-]){re.escape(long)}(?![\w-])", result.stdout), long
        assert re.search(rf"(?<![\w-]){re.escape(short)}(?![\w-])", result.stdout), short
    assert ran(tmp_path) == []


def test_stop_help_lists_yes(tmp_path: Path) -> None:
    result = run_lynx("stop", "--help", cwd=tmp_path)

    assert result.returncode == 0
    assert_clean(result)
    assert re.search(r"(?<![\w-])--yes(?![\w-])", result.stdout)
    assert re.search(r"(?<![\w-])-y(?![\w-])", result.stdout)


def test_version(tmp_path: Path) -> None:
    result = run_lynx("--version", cwd=tmp_path)

    assert result.returncode == 0
    assert_clean(result)
    assert re.search(r"lynx.*\d+\.\d+", result.stdout, flags=re.IGNORECASE)


# --- live output ----------------------------------------------------------------------------

# Prints a line, then holds on until the test says go (or 30 s pass), then prints more.
WAITING_STEP = """
import os, sys, time
print("first line")
sys.stdout.flush()
deadline = time.monotonic() + 30
while not os.path.exists("go") and time.monotonic() < deadline:
    time.sleep(0.05)
open("finished", "w").close()
print("second line")
"""


def test_step_output_reaches_lynx_stdout_while_the_step_still_runs(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    write_script(tmp_path, "slow.py", WAITING_STEP)
    write_config(tmp_path, "steps:\n  - script: slow.py\n")
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", "config.yaml"],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    started.append(lynx)
    reader = LineReader(lynx.stdout)  # type: ignore[arg-type]
    try:
        arrived = reader.wait_for_line(b"first line", timeout=20)
        still_running = lynx.poll() is None and not (tmp_path / "finished").exists()
    finally:
        (tmp_path / "go").touch()

    assert arrived, b"".join(reader.seen)
    assert still_running
    assert lynx.wait(timeout=30) == 0
    assert reader.wait_for_line(b"second line", timeout=10)


def test_step_output_reaches_the_log_file_while_the_step_still_runs(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    write_script(tmp_path, "slow.py", WAITING_STEP)
    write_config(tmp_path, "steps:\n  - script: slow.py\n")
    log = tmp_path / "lynx.log"
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", "config.yaml", "-lf", str(log)],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started.append(lynx)

    def first_line_logged() -> bool:
        return log.exists() and "first line" in log.read_text(encoding="utf-8", errors="replace")

    try:
        wait_for(first_line_logged, timeout=20)
        still_running = lynx.poll() is None and not (tmp_path / "finished").exists()
    finally:
        (tmp_path / "go").touch()

    assert still_running
    assert lynx.wait(timeout=30) == 0
    assert "second line" in log.read_text(encoding="utf-8")


def test_invalid_utf8_and_missing_final_newline_do_not_break_anything(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "binary.py",
        """
        import sys
        sys.stdout.buffer.write(b"bad \\xff\\xfe bytes\\n" + bytes(range(256)) + b"\\nno newline at end")
        """,
    )
    marker_step(tmp_path, "after.py")
    write_config(tmp_path, "steps:\n  - script: binary.py\n  - script: after.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    assert "Step 1 (binary.py) completed successfully." in result.stdout
    assert ran(tmp_path) == ["after.py"]
    text = log.read_text(encoding="utf-8")
    assert "bad \ufffd\ufffd bytes" in text
    assert "no newline at end" in text
    assert "no newline at end" in result.stdout
    # The frame still closes on its own line after a last line without a newline.
    assert "no newline at end\n" + OUTPUT_FOOT + "\nStep 1 (binary.py)" in result.stdout


def test_stdout_and_stderr_of_a_step_both_appear(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "both.py",
        """
        import sys
        print("this went to stdout")
        print("this went to stderr", file=sys.stderr)
        """,
    )
    write_config(tmp_path, "steps:\n  - script: both.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    screen = result.stdout + result.stderr
    assert "this went to stdout" in screen
    assert "this went to stderr" in screen
    logged = log.read_text(encoding="utf-8")
    assert "this went to stdout" in logged
    assert "this went to stderr" in logged


# --- interactive mode without a terminal, interruption ---------------------------------------


def test_interactive_run_with_stdin_at_end_of_input_ends_with_exit_1(tmp_path: Path) -> None:
    marker_step(tmp_path, "fails.py", exit_code=4)
    marker_step(tmp_path, "never.py")
    write_config(tmp_path, "steps:\n  - script: fails.py\n  - script: never.py\n")

    result = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 1
    assert_clean(result)
    assert "Step 1 (fails.py) failed with exit code 4." in result.stdout + result.stderr
    assert "Do you want to rerun this step? (y/n)" in result.stdout
    assert ran(tmp_path) == ["fails.py"]


SLEEPING_STEP = """
import os, signal, time
signal.signal(signal.SIGINT, signal.SIG_DFL)  # a forwarded Ctrl+C ends it quietly, without a traceback
with open("step.pid.tmp", "w") as handle:
    handle.write(str(os.getpid()))
os.replace("step.pid.tmp", "step.pid")
time.sleep(60)
"""


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_lynx_ends_the_running_step(
    tmp_path: Path, started: list[subprocess.Popen[bytes]], signum: int, exit_code: int
) -> None:
    write_script(tmp_path, "sleeper.py", SLEEPING_STEP)
    marker_step(tmp_path, "never.py")
    write_config(tmp_path, "steps:\n  - script: sleeper.py\n  - script: never.py\n")
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        lynx = subprocess.Popen(
            [*lynx_command(), "start", "-ni", "-cf", "config.yaml"],
            cwd=tmp_path,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    started.append(lynx)
    pid_file = tmp_path / "step.pid"
    wait_for(pid_file.exists, timeout=30)
    step_pid = int(pid_file.read_text())
    step_created = psutil.Process(step_pid).create_time()
    try:
        lynx.send_signal(signum)
        code = lynx.wait(timeout=30)
        wait_for(lambda: gone(step_pid, step_created), timeout=15)
    finally:
        kill_if_alive(step_pid, step_created)

    output = out_path.read_text(errors="replace") + err_path.read_text(errors="replace")
    assert code == exit_code, output
    assert "Traceback" not in output
    assert ran(tmp_path) == []


# --- regressions from review -------------------------------------------------------------------


def run_with_stdin_closed(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lynx args <&-``: standard input not even /dev/null, but closed."""
    return subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *lynx_command(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        env=clean_env(),
        timeout=60,
    )


def test_interactive_start_with_stdin_closed_and_a_failing_step_exits_1(tmp_path: Path) -> None:
    marker_step(tmp_path, "fails.py", exit_code=4)
    marker_step(tmp_path, "never.py")
    write_config(tmp_path, "steps:\n  - script: fails.py\n  - script: never.py\n")

    result = run_with_stdin_closed("start", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert_clean(result)
    assert "Step 1 (fails.py) failed with exit code 4." in result.stdout + result.stderr
    assert ran(tmp_path) == ["fails.py"]


def test_stop_with_stdin_closed_and_no_pid_file_exits_1(tmp_path: Path) -> None:
    result = run_with_stdin_closed("stop", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert_clean(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert "no background Lynx to stop" in errors[0]


def test_stop_with_stdin_closed_leaves_a_running_background_lynx_alone(lynx_dir: Path) -> None:
    """Closed input is no answer: nothing is stopped, and the user gets no traceback."""
    marker_step(lynx_dir, "step.py")
    write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: step.py\n")
    started = run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", "x.log", cwd=lynx_dir, timeout=30)
    assert started.returncode == 0, started.stdout + started.stderr
    record = json.loads((lynx_dir / ".lynx_pid.json").read_text(encoding="utf-8"))
    scheduler = psutil.Process(record["pid"])

    result = run_with_stdin_closed("stop", cwd=lynx_dir)

    assert result.returncode == 1, result.stdout + result.stderr
    assert_clean(result)
    assert "Not stopped." in result.stdout
    assert scheduler.is_running() and scheduler.status() != psutil.STATUS_ZOMBIE
    assert run_lynx("stop", "--yes", cwd=lynx_dir, timeout=40).returncode == 0
