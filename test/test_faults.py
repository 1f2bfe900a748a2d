"""Fault injection in a foreground run (issue 3): each fault is real, each check is from outside.

Steps that ignore SIGTERM or scatter processes across sessions, signals to Lynx mid-run, output
that is huge, binary, newline-free or on two streams at once, hostile script paths and arguments,
a log file that cannot be opened or written, and a screen that goes away mid-run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config, write_script

MIB = 1024 * 1024
# Lynx splits longer runs without a newline at this length in its log.
MAX_LOG_LINE = 64 * 1024
# Lynx's grace between SIGTERM and SIGKILL is 5 s; allow for a slow, shared machine.
ESCALATION_TIMEOUT = 20
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")
OUTPUT_HEAD = "-" * 20 + " Output " + "-" * 20
OUTPUT_FOOT = "-" * 48


# ---------------------------------------------------------------------------------------------
# Shared fault helpers
# ---------------------------------------------------------------------------------------------


class RunningLynx:
    """A foreground ``lynx`` started in the background of the test.

    Its stdout and stderr are drained by threads (so neither side can deadlock on a full pipe),
    and its resident memory can be sampled with psutil while it runs.
    """

    def __init__(
        self,
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        keep_stdout: bool = True,
        sample_memory: bool = False,
    ) -> None:
        self.popen = subprocess.Popen(
            [*lynx_command(), *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or clean_env(),
        )
        self.pid = self.popen.pid
        self.stdout = bytearray()
        self.stdout_size = 0
        self.stderr = bytearray()
        self.peak_rss = 0
        self._keep_stdout = keep_stdout
        self._threads = [
            threading.Thread(target=self._drain_stdout, daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        if sample_memory:
            self._threads.append(threading.Thread(target=self._sample_memory, daemon=True))
        for thread in self._threads:
            thread.start()

    def _drain_stdout(self) -> None:
        assert self.popen.stdout is not None
        while True:
            chunk = self.popen.stdout.read1(1024 * 1024)
            if not chunk:
                return
            self.stdout_size += len(chunk)
            if self._keep_stdout:
                self.stdout += chunk

    def _drain_stderr(self) -> None:
        assert self.popen.stderr is not None
        while True:
            chunk = self.popen.stderr.read1(64 * 1024)
            if not chunk:
                return
            self.stderr += chunk

    def _sample_memory(self) -> None:
        try:
            process = psutil.Process(self.pid)
            while self.popen.poll() is None:
                self.peak_rss = max(self.peak_rss, process.memory_info().rss)
                time.sleep(0.005)
        except psutil.Error:
            pass

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def signal(self, signum: int) -> None:
        """Signal Lynx itself (by the PID this test started), as a terminal's Ctrl+C or ``kill`` would."""
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """Wait for Lynx to end; a run still going after ``timeout`` is a deadlock: kill it, fail."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"lynx did not end within {timeout} s (deadlock?); stderr: {self.err[-2000:]}")
        for thread in self._threads:
            thread.join(timeout=30)
        return code

    def kill(self) -> None:
        """SIGKILL Lynx and every process below it (cleanup after a failed test)."""
        kill_tree(self.pid)
        self.popen.wait(timeout=30)

    def __enter__(self) -> RunningLynx:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.popen.poll() is None:
            self.kill()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its descendants and the process groups they lead (only processes this test started)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for process in tree[1:]:
        # A step leads its own process group, which may hold processes that left the tree.
        with contextlib.suppress(OSError):
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signal.SIGKILL)
    for process in tree:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(tree, timeout=10)


def pid_step(directory: Path, name: str, body: str) -> Path:
    """A step script whose ``body`` can call ``record_pid(name)``: write its PID to ``directory/name`` atomically."""
    helper = f"""
        import os

        def record_pid(name):
            path = os.path.join({str(directory)!r}, name)
            with open(path + ".tmp", "w") as handle:
                handle.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
        """
    return write_script(directory, name, textwrap.dedent(helper) + textwrap.dedent(body))


def wait_for_pid(lynx: RunningLynx, path: Path, timeout: float = 30) -> psutil.Process:
    """The process whose PID a step wrote to ``path``, once the file appears (fails if Lynx ends first)."""
    wait_for(lambda: path.exists() or lynx.popen.poll() is not None, timeout=timeout)
    if not path.exists():
        lynx.wait(timeout=10)
        pytest.fail(f"lynx ended before {path.name} was written:\n{lynx.out}\n{lynx.err}")
    return psutil.Process(int(path.read_text()))


def is_gone(process: psutil.Process) -> bool:
    """Ended: no longer running (psutil also checks the PID was not reused), or a zombie nobody reaped yet."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def kill_leftovers(processes: list[psutil.Process]) -> None:
    """Cleanup: SIGKILL whatever of the test's own step processes outlived a failed test."""
    for process in processes:
        if not is_gone(process):
            with contextlib.suppress(psutil.Error):
                process.kill()


def log_lines(path: Path) -> list[tuple[str, str]]:
    """Every line of a Lynx log file as (prefix, message); fails if a line lacks the timestamp prefix."""
    data = path.read_bytes()
    text = data.decode("utf-8")  # Lynx writes valid UTF-8 whatever the steps wrote.
    lines = text.split("\n")
    assert lines[-1] == "", "the log file does not end with a complete line"
    result = []
    for number, line in enumerate(lines[:-1], start=1):
        match = LOG_PREFIX.match(line)
        assert match, f"log line {number} has no timestamp prefix: {line[:200]!r}"
        result.append((match.group(0), line[match.end() :]))
    return result


def step_output_in_log(path: Path) -> list[str]:
    """The messages a single step's output became in the log: the lines between its separators."""
    messages = [message for _, message in log_lines(path)]
    start = messages.index(OUTPUT_HEAD)
    end = messages.index(OUTPUT_FOOT, start + 1)
    return messages[start + 1 : end]


def assert_log_lines_bounded(path: Path) -> None:
    for prefix, message in log_lines(path):
        assert len(message) <= MAX_LOG_LINE, f"a log line of {len(message)} characters (prefix {prefix!r})"


def one_step_config(directory: Path, script: Path) -> Path:
    return write_config(directory, f"steps:\n  - script: {json.dumps(str(script))}\n")


def run_output_step(
    directory: Path, body: str, *, sample_memory: bool = False, keep_stdout: bool = True
) -> RunningLynx:
    """Run one step writing ``body``'s output with -ni and a never-rotating log; assert it ended well."""
    script = write_script(directory, "noisy.py", "import os, sys, threading\n" + textwrap.dedent(body))
    config = one_step_config(directory, script)
    log = directory / "lynx.log"
    with RunningLynx(
        "start", "-ni", "-cf", str(config), "-lf", str(log), "-ls", "0",
        cwd=directory, sample_memory=sample_memory, keep_stdout=keep_stdout,
    ) as lynx:  # fmt: skip
        code = lynx.wait(timeout=120)
    assert code == 0, lynx.err[-2000:]
    assert "Traceback" not in lynx.err
    if keep_stdout:
        assert "Step 1 (" in lynx.out and "completed successfully" in lynx.out
    return lynx


# ---------------------------------------------------------------------------------------------
# Steps that resist or scatter: SIGKILL escalation, whole process trees, no leftovers
# ---------------------------------------------------------------------------------------------


def test_ctrl_c_escalates_to_sigkill_for_a_step_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = pid_step(
        tmp_path,
        "stubborn.py",
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is forwarded as SIGINT first
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        record_pid("stubborn.pid")
        print("ignoring SIGTERM", flush=True)
        time.sleep(120)
        """,
    )
    after = marker_step(tmp_path, "after.py")
    config = write_config(tmp_path, f"steps:\n  - script: {stubborn}\n  - script: {after}\n")
    step = None
    with RunningLynx("start", "-ni", "-cf", str(config), cwd=tmp_path) as lynx:
        try:
            step = wait_for_pid(lynx, tmp_path / "stubborn.pid")
            wait_for(lambda: b"ignoring SIGTERM" in lynx.stdout)
            lynx.signal(signal.SIGINT)
            code = lynx.wait(timeout=ESCALATION_TIMEOUT)
            assert code == 130, lynx.out + lynx.err
            wait_for(lambda: is_gone(step), timeout=10)
        finally:
            if step is not None:
                kill_leftovers([step])
    output = lynx.out + lynx.err
    assert "SIGKILL" in output
    assert "Traceback" not in output
    assert ran(tmp_path) == []


TREE_STEP = """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a forwarded Ctrl+C ends each quietly, without a traceback

    if len(sys.argv) > 1 and sys.argv[1] == "session-child":
        os.setsid()  # its own session and process group: out of reach of a signal to the step's group
        subprocess.Popen([sys.executable, sys.argv[0], "grandchild"])
        record_pid("session-child.pid")
        time.sleep(60)
    elif len(sys.argv) > 1 and sys.argv[1] == "grandchild":
        record_pid("grandchild.pid")
        time.sleep(60)
    else:
        subprocess.Popen([sys.executable, sys.argv[0], "session-child"])
        middle = os.fork()
        if middle == 0:
            parent = os.getpid()
            if os.fork() == 0:
                while os.getppid() == parent:  # wait to be re-parented: out of the step's process tree
                    time.sleep(0.01)
                record_pid("orphan.pid")
                time.sleep(60)
                os._exit(0)
            os._exit(0)
        os.waitpid(middle, 0)
        record_pid("step.pid")
        print("tree started", flush=True)
        time.sleep(60)
    """
TREE_PIDS = ("step.pid", "session-child.pid", "grandchild.pid", "orphan.pid")


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_ends_the_step_its_children_and_grandchildren(tmp_path: Path, signum: int, exit_code: int) -> None:
    tree = pid_step(tmp_path, "tree.py", TREE_STEP)
    config = one_step_config(tmp_path, tree)
    processes: list[psutil.Process] = []
    with RunningLynx("start", "-ni", "-cf", str(config), cwd=tmp_path) as lynx:
        try:
            for name in TREE_PIDS:
                processes.append(wait_for_pid(lynx, tmp_path / name))
            # Each escape route is really taken: one left the step's session, one left its tree.
            step, session_child, grandchild, orphan = processes
            assert os.getsid(session_child.pid) != os.getsid(step.pid)
            assert os.getpgid(grandchild.pid) == session_child.pid
            assert orphan.pid not in {child.pid for child in step.children(recursive=True)}
            assert os.getpgid(orphan.pid) == step.pid
            lynx.signal(signum)
            code = lynx.wait(timeout=ESCALATION_TIMEOUT)
            for process in processes:
                wait_for(lambda process=process: is_gone(process), timeout=10)
        finally:
            kill_leftovers(processes)
    assert code == exit_code, lynx.out + lynx.err
    assert "Traceback" not in lynx.out + lynx.err


def test_a_normally_finishing_run_leaves_no_process_behind(tmp_path: Path) -> None:
    step = pid_step(tmp_path, "quick.py", 'record_pid("quick.pid")\nprint("done")\n')
    config = one_step_config(tmp_path, step)
    with RunningLynx("start", "-ni", "-cf", str(config), cwd=tmp_path) as lynx:
        lynx_process = psutil.Process(lynx.pid)
        code = lynx.wait(timeout=60)
    assert code == 0, lynx.err
    step_pid = int((tmp_path / "quick.pid").read_text())
    assert not psutil.pid_exists(step_pid) or is_gone(psutil.Process(step_pid))
    assert is_gone(lynx_process)

    def mentions_this_run(process: psutil.Process) -> bool:
        try:
            return any(str(tmp_path) in part for part in process.cmdline())
        except psutil.Error:
            return False

    left = [process for process in psutil.process_iter() if mentions_this_run(process) and not is_gone(process)]
    assert left == []


def test_sigterm_mid_run_logs_the_interrupted_step_and_exits_143(tmp_path: Path) -> None:
    first = marker_step(tmp_path, "first.py")
    slow = pid_step(
        tmp_path,
        "slow.py",
        """
        import time
        record_pid("slow.pid")
        print("working", flush=True)
        time.sleep(60)
        """,
    )
    third = marker_step(tmp_path, "third.py")
    config = write_config(tmp_path, f"steps:\n  - script: {first}\n  - script: {slow}\n  - script: {third}\n")
    log = tmp_path / "lynx.log"
    step = None
    with RunningLynx("start", "-ni", "-cf", str(config), "-lf", str(log), cwd=tmp_path) as lynx:
        try:
            step = wait_for_pid(lynx, tmp_path / "slow.pid")
            wait_for(lambda: "working" in log.read_text(encoding="utf-8"))
            lynx.signal(signal.SIGTERM)
            code = lynx.wait(timeout=ESCALATION_TIMEOUT)
            wait_for(lambda: is_gone(step), timeout=10)
        finally:
            if step is not None:
                kill_leftovers([step])
    assert code == 143, lynx.out + lynx.err
    assert "Traceback" not in lynx.out + lynx.err
    assert ran(tmp_path) == ["first.py"]
    messages = [message for _, message in log_lines(log)]
    interrupted = [m for m in messages if m.startswith(f"Step 2 ({slow}") and "interrupted" in m]
    assert interrupted, "the log does not say which step was interrupted:\n" + "\n".join(messages)
    assert any("SIGTERM" in m and "stopped" in m for m in messages), "\n".join(messages)
    assert not any(m.startswith("Processing Step 3") for m in messages)


# ---------------------------------------------------------------------------------------------
# Output stress: no deadlock, every byte in the log, bounded lines, flat memory
# ---------------------------------------------------------------------------------------------

NO_NEWLINE_STEP = """
    block = b"x" * 65536
    for _ in range({blocks}):
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.flush()
    """


def test_output_without_a_newline_is_logged_whole_in_bounded_lines_with_flat_memory(tmp_path: Path) -> None:
    peaks = {}
    for size_mib in (5, 50):
        directory = tmp_path / f"run{size_mib}"
        directory.mkdir()
        lynx = run_output_step(
            directory,
            NO_NEWLINE_STEP.format(blocks=size_mib * 16),
            sample_memory=True,
            keep_stdout=False,
        )
        peaks[size_mib] = lynx.peak_rss
        assert lynx.stdout_size > size_mib * MIB, "the screen did not get every byte"
        log = directory / "lynx.log"
        assert_log_lines_bounded(log)
        payload = step_output_in_log(log)
        assert sum(len(line) for line in payload) == size_mib * MIB
        assert all(set(line) == {"x"} for line in payload)
        del payload
    assert peaks[5] > 0 and peaks[50] > 0, "the memory sampler saw nothing"
    assert peaks[50] < 100 * MIB, f"peak RSS {peaks[50] / MIB:.1f} MiB for 50 MiB of output"
    growth = peaks[50] - peaks[5]
    assert growth < 6 * MIB, f"peak RSS grew by {growth / MIB:.1f} MiB from 5 MiB to 50 MiB of output"


def test_binary_output_reaches_the_screen_untouched_and_the_log_as_valid_text(tmp_path: Path) -> None:
    repeats = 4096
    lynx = run_output_step(
        tmp_path,
        f"sys.stdout.buffer.write(bytes(range(256)) * {repeats})\nsys.stdout.buffer.flush()\n",
    )
    assert bytes(range(256)) * repeats in lynx.stdout
    log = tmp_path / "lynx.log"
    assert_log_lines_bounded(log)
    text = "".join(step_output_in_log(log))
    # Each undecodable byte (0x80-0xff) becomes one U+FFFD; every other byte but the line breaks is kept.
    assert text.count("\ufffd") == 128 * repeats
    for value in range(128):
        if chr(value) not in "\r\n":
            assert text.count(chr(value)) == repeats, f"byte {value:#04x}"


def test_very_long_lines_are_logged_whole_in_bounded_pieces(tmp_path: Path) -> None:
    lines = 8
    run_output_step(
        tmp_path,
        f'line = b"y" * {MIB} + b"\\n"\nfor _ in range({lines}):\n    sys.stdout.buffer.write(line)\n',
        keep_stdout=False,
    )
    log = tmp_path / "lynx.log"
    assert_log_lines_bounded(log)
    payload = step_output_in_log(log)
    assert sum(line.count("y") for line in payload) == lines * MIB
    assert all(set(line) <= {"y"} for line in payload)


def test_carriage_return_progress_bars_stay_raw_on_screen_and_become_lines_in_the_log(tmp_path: Path) -> None:
    updates = 2000
    lynx = run_output_step(
        tmp_path,
        f"""
        for i in range({updates}):
            sys.stdout.write("\\rprogress %5d/{updates} [%-20s]" % (i, "#" * (i * 20 // {updates})))
            sys.stdout.flush()
        sys.stdout.write("\\n")
        """,
    )
    expected = [f"progress {i:5d}/{updates} [{'#' * (i * 20 // updates):<20}]" for i in range(updates)]
    raw = "".join("\r" + line for line in expected).encode() + b"\n"
    assert raw in lynx.stdout, "the screen did not get the progress bar's bytes as written"
    payload = [line for line in step_output_in_log(tmp_path / "lynx.log") if line]
    assert payload == expected


def test_stdout_and_stderr_busy_at_once_do_not_deadlock_and_lose_nothing(tmp_path: Path) -> None:
    lines = 10 * 1024  # 10 MiB per stream, in 1 KiB lines: each write is atomic on the pipe
    lynx = run_output_step(
        tmp_path,
        f"""
        def pour(fd, char):
            line = char * 1023 + b"\\n"
            for _ in range({lines}):
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]

        threads = [threading.Thread(target=pour, args=(1, b"o")), threading.Thread(target=pour, args=(2, b"e"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        """,
        keep_stdout=False,
    )
    assert lynx.stdout_size > 2 * lines * 1024
    log = tmp_path / "lynx.log"
    assert_log_lines_bounded(log)
    payload = step_output_in_log(log)
    assert payload.count("o" * 1023) == lines
    assert payload.count("e" * 1023) == lines
    assert len(payload) == 2 * lines, "a line was torn or lost"


# ---------------------------------------------------------------------------------------------
# Hostile script paths and arguments: exactly as written, never through a shell
# ---------------------------------------------------------------------------------------------

HOSTILE_ARGUMENTS = [
    "a b",
    "it's",
    '"q"',
    "ü€😀",
    "$(touch pwned)",
    "; touch pwned2",
    "`touch pwned3`",
    "| touch pwned4",
    "&& touch pwned5 &",
    "> pwned6",
    "*",
    "$HOME",
    "back\\slash",
    "  padded  ",
    "",
]


def test_hostile_paths_and_arguments_reach_the_step_exactly(tmp_path: Path) -> None:
    dump = tmp_path / "argv.json"
    script = write_script(
        tmp_path,
        "it's ü€ 😀 $(touch pwned7) dir/step one; `touch pwned8`.py",
        f"""
        import json, sys
        with open({str(dump)!r}, "w", encoding="utf-8") as handle:
            json.dump(sys.argv[1:], handle)
        """,
    )
    entries = [shlex.quote(argument) for argument in HOSTILE_ARGUMENTS]
    entries += [shlex.join(["x y", "it's ü"]), "plain words"]
    expected = [*HOSTILE_ARGUMENTS, "x y", "it's ü", "plain", "words"]
    relative = script.relative_to(tmp_path)
    config = write_config(
        tmp_path,
        "steps:\n"
        f"  - script: {json.dumps(str(relative), ensure_ascii=False)}\n"
        "    arguments:\n" + "".join(f"      - {json.dumps(entry, ensure_ascii=False)}\n" for entry in entries),
    )
    result = run_lynx("start", "-ni", "-cf", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert json.loads(dump.read_text(encoding="utf-8")) == expected
    pwned = sorted(path.name for path in tmp_path.rglob("pwned*"))
    assert pwned == []


# ---------------------------------------------------------------------------------------------
# The log file: cannot be opened (up front), cannot be written (mid-run)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["read-only directory", "under a regular file"])
def test_a_log_file_that_cannot_be_opened_is_refused_before_anything_runs(tmp_path: Path, where: str) -> None:
    if where == "read-only directory":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories; the 'under a regular file' case covers root")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        log = locked / "lynx.log"
    else:
        (tmp_path / "file.txt").write_text("not a directory\n")
        log = tmp_path / "file.txt" / "lynx.log"
    step = marker_step(tmp_path, "step.py")
    config = one_step_config(tmp_path, step)
    try:
        result = run_lynx("start", "-ni", "-cf", str(config), "-lf", str(log), cwd=tmp_path)
    finally:
        if where == "read-only directory":
            (tmp_path / "locked").chmod(0o755)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert str(log) in errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert ran(tmp_path) == []
    assert not log.exists()


def test_a_log_write_failure_mid_run_is_reported_once_and_the_run_goes_on(tmp_path: Path) -> None:
    first = marker_step(tmp_path, "first.py", extra='print("a line for the log\\n" * 100)')
    second = marker_step(tmp_path, "second.py")
    config = write_config(tmp_path, f"steps:\n  - script: {first}\n  - script: {second}\n")
    result = run_lynx("start", "-ni", "-cf", str(config), "--log-file", "/dev/full", "--log-size", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran(tmp_path) == ["first.py", "second.py"]
    assert "All 2 steps completed successfully." in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    problems = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(problems) == 1, result.stderr
    assert "/dev/full" in problems[0]


# ---------------------------------------------------------------------------------------------
# The screen goes away mid-run
# ---------------------------------------------------------------------------------------------


def test_a_closed_stdout_mid_run_does_not_stop_the_run(tmp_path: Path) -> None:
    first = marker_step(tmp_path, "first.py")
    go = tmp_path / "reader-gone"
    second = marker_step(
        tmp_path,
        "second.py",
        extra=(
            f"import os, time\n"
            f"deadline = time.monotonic() + 30\n"
            f"while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n"
            f"    time.sleep(0.02)\n"
            f"for i in range(20000):\n"
            f"    print('after the reader left', i)\n"
        ).replace("\n", "\n        "),
    )
    third = marker_step(tmp_path, "third.py")
    config = write_config(tmp_path, f"steps:\n  - script: {first}\n  - script: {second}\n  - script: {third}\n")
    log = tmp_path / "lynx.log"
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        lynx = subprocess.Popen(
            [*lynx_command(), "start", "-ni", "-cf", str(config), "-lf", str(log)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=clean_env(),
        )
    try:
        assert lynx.stdout is not None
        # Like `lynx start -ni | head -n 1`: the reader takes one line and closes the pipe.
        reader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.buffer.readline()"], stdin=lynx.stdout)
        lynx.stdout.close()
        reader.wait(timeout=30)
        go.touch()
        code = lynx.wait(timeout=60)
    finally:
        if lynx.poll() is None:
            kill_tree(lynx.pid)
            lynx.wait(timeout=30)
    errors = stderr_path.read_text(encoding="utf-8", errors="replace")
    assert ran(tmp_path) == ["first.py", "second.py", "third.py"]
    messages = [message for _, message in log_lines(log)]
    assert "after the reader left 19999" in messages
    assert "All 3 steps completed successfully." in messages
    assert "Traceback" not in errors
    # Python's own complaint when a final flush of stdout fails is a traceback in all but name.
    assert "Exception ignored" not in errors, f"exit code {code}: {errors}"
    assert code == 0, errors


# ---------------------------------------------------------------------------------------------
# Regressions from review
# ---------------------------------------------------------------------------------------------


def test_a_child_still_printing_after_the_step_exited_is_relayed_and_left_running(tmp_path: Path) -> None:
    """The step is done when its own process exits (issue 7, point 1): the next step starts while
    the child it left (in its process group, no setsid) keeps printing, and Lynx keeps relaying
    that output; Ctrl+C during the next step ends that step, not what an earlier one left."""
    script = pid_step(
        tmp_path,
        "leaves_a_child.py",
        """
        import subprocess, sys, time
        if len(sys.argv) > 1 and sys.argv[1] == "child":
            record_pid("child.pid")
            while True:
                try:
                    os.write(1, b"child still working\\n")
                except OSError:
                    pass  # a reader that went away does not end this child: only a signal does
                time.sleep(0.1)
        else:
            subprocess.Popen([sys.executable, sys.argv[0], "child"])
            record_pid("main.pid")
            print("main process exits", flush=True)
        """,
    )
    waiter = pid_step(
        tmp_path,
        "waiter.py",
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        record_pid("waiter.pid")
        time.sleep(60)
        """,
    )
    config = write_config(tmp_path, f"steps:\n  - script: {script}\n  - script: {waiter}\n")
    processes: list[psutil.Process] = []
    with RunningLynx("start", "-ni", "-cf", str(config), cwd=tmp_path) as lynx:
        try:
            child = wait_for_pid(lynx, tmp_path / "child.pid")
            processes.append(child)
            waiting = wait_for_pid(lynx, tmp_path / "waiter.pid")
            processes.append(waiting)
            # The step's own process has ended (the next one runs); its child is still in its group.
            assert os.getpgid(child.pid) == int((tmp_path / "main.pid").read_text())
            # Lynx is still relaying the child's output while the next step runs.
            seen = lynx.stdout.count(b"child still working")
            wait_for(lambda: lynx.stdout.count(b"child still working") >= seen + 3)
            assert lynx.popen.poll() is None
            lynx.signal(signal.SIGINT)
            code = lynx.wait(timeout=ESCALATION_TIMEOUT)
            wait_for(lambda: is_gone(waiting), timeout=10)
            assert not is_gone(child), "Lynx ended what an earlier step left running"
        finally:
            kill_leftovers(processes)
    assert code == 130, lynx.out + lynx.err
    assert "Step 1 (" in lynx.out and "completed successfully" in lynx.out
    assert "Traceback" not in lynx.out + lynx.err


def test_output_of_an_interrupted_step_is_kept_to_its_last_byte(tmp_path: Path) -> None:
    """An unfinished line and what the step prints while it is being ended reach the log and the screen."""
    script = write_script(
        tmp_path,
        "checkpoints.py",
        """
        import signal, sys, time

        def save(signum, frame):
            sys.stdout.write("saving checkpoint\\n")
            sys.stdout.flush()
            sys.exit(0)

        signal.signal(signal.SIGTERM, save)
        signal.signal(signal.SIGINT, save)  # Ctrl+C reaches the step as SIGINT
        sys.stdout.write("progress 50%")
        sys.stdout.flush()
        time.sleep(60)
        """,
    )
    config = one_step_config(tmp_path, script)
    log = tmp_path / "lynx.log"
    with RunningLynx("start", "-ni", "-cf", str(config), "-lf", str(log), cwd=tmp_path) as lynx:
        wait_for(lambda: b"progress 50%" in lynx.stdout, timeout=20)
        lynx.signal(signal.SIGINT)
        code = lynx.wait(timeout=ESCALATION_TIMEOUT)
    assert code == 130, lynx.out + lynx.err
    assert "Traceback" not in lynx.out + lynx.err
    messages = [message for _, message in log_lines(log)]
    logged = "\n".join(messages)
    assert "progress 50%" in logged, logged
    assert "saving checkpoint" in logged, logged
    assert OUTPUT_FOOT in messages[messages.index(OUTPUT_HEAD) :], logged
    screen = lynx.out
    progress = screen.index("progress 50%")
    saving = screen.index("saving checkpoint", progress)
    assert OUTPUT_FOOT in screen[saving:], screen


def test_a_closed_stdout_is_reported_once(tmp_path: Path) -> None:
    go = tmp_path / "reader-gone"
    step = marker_step(
        tmp_path,
        "chatty.py",
        extra=(
            f"import os, time\n"
            f"deadline = time.monotonic() + 30\n"
            f"while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:\n"
            f"    time.sleep(0.02)\n"
            f"for i in range(20000):\n"
            f"    print('after the reader left', i)\n"
        ).replace("\n", "\n        "),
    )
    after = marker_step(tmp_path, "after.py")
    config = write_config(tmp_path, f"steps:\n  - script: {step}\n  - script: {after}\n")
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        lynx = subprocess.Popen(
            [*lynx_command(), "start", "-ni", "-cf", str(config)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=clean_env(),
        )
    try:
        assert lynx.stdout is not None
        # Like `lynx start -ni | head -n 1`.
        reader = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.buffer.readline()"], stdin=lynx.stdout)
        lynx.stdout.close()
        reader.wait(timeout=30)
        go.touch()
        code = lynx.wait(timeout=60)
    finally:
        if lynx.poll() is None:
            kill_tree(lynx.pid)
            lynx.wait(timeout=30)
    errors = stderr_path.read_text(encoding="utf-8", errors="replace")
    assert code == 0, errors
    assert ran(tmp_path) == ["chatty.py", "after.py"]
    assert "Traceback" not in errors
    about_the_screen = [line for line in errors.splitlines() if "screen" in line.lower()]
    assert len(about_the_screen) == 1, errors


# ---------------------------------------------------------------------------------------------
# Issue 7, odd environments (points 20-21): closed streams, a deleted working directory, a
# terminal a step made non-blocking, color variables, shell completion, the README's example
# ---------------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")
DURATION = re.compile(r" +\d+(\.\d+)? s$")


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-", "<&- >&- 2>&-"])
@pytest.mark.parametrize("exit_code", [0, 3])
def test_closed_standard_streams_at_start_run_normally_and_keep_the_exit_code(
    tmp_path: Path, closed: str, exit_code: int
) -> None:
    marker_step(tmp_path, "step.py", exit_code=exit_code)
    write_config(tmp_path, "steps:\n  - script: step.py\n")
    log = tmp_path / "lynx.log"
    command = " ".join(shlex.quote(word) for word in [*lynx_command(), "start", "-ni", "-lf", str(log)])
    errors = tmp_path / "errors.txt"

    # The shell closes the streams for Lynx only; its own stderr goes to errors.txt.
    code = subprocess.run(
        ["sh", "-c", f"{command} -cf config.yaml {closed}"],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(errors, "wb"),  # noqa: SIM115 - closed with the process
        timeout=60,
    ).returncode

    assert code == (0 if exit_code == 0 else 1), errors.read_text()
    assert "Traceback" not in errors.read_text()
    assert ran(tmp_path) == ["step.py"]
    logged = log.read_text()
    assert "output of step.py" in logged
    assert ("All 1 step completed successfully." in logged) == (exit_code == 0)


@pytest.mark.parametrize(
    "command",
    [["start", "-ni"], ["start", "-bg", "-lf", "/dev/null"], ["stop", "-y"], ["history"], ["validate"], ["status"],
     ["logs"]],
)  # fmt: skip
def test_a_deleted_working_directory_is_one_error_line(tmp_path: Path, command: list[str]) -> None:
    marker_step(tmp_path, "step.py")
    config = write_config(tmp_path, f"steps:\n  - script: {tmp_path / 'step.py'}\n")
    gone = tmp_path / "gone"
    gone.mkdir()
    lynx = " ".join(shlex.quote(word) for word in [*lynx_command(), *command])

    result = subprocess.run(
        ["sh", "-c", f"cd {shlex.quote(str(gone))} && rmdir {shlex.quote(str(gone))} && exec {lynx} -cf {config}"]
        if command[0] in ("start", "validate")
        else ["sh", "-c", f"cd {shlex.quote(str(gone))} && rmdir {shlex.quote(str(gone))} && exec {lynx}"],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "directory" in errors[0], result.stderr
    assert ran(tmp_path) == []


def test_a_terminal_a_step_made_non_blocking_still_gets_every_line(tmp_path: Path) -> None:
    import pexpect

    written = tmp_path / "all-written"
    count = 5000
    # Terminal flags belong to the terminal: O_NONBLOCK set on the step's input (the terminal it
    # inherits) is set on Lynx's screen too.
    write_script(
        tmp_path,
        "nonblocking.py",
        f"""
        import fcntl, os, sys
        fcntl.fcntl(0, fcntl.F_SETFL, fcntl.fcntl(0, fcntl.F_GETFL) | os.O_NONBLOCK)
        for number in range({count}):
            print(f"line {{number:05d}} " + "x" * 60)
        sys.stdout.flush()
        open({str(written)!r}, "w").close()
        """,
    )
    write_config(tmp_path, "steps:\n  - script: nonblocking.py\n")
    command = [*lynx_command(), "start", "-cf", "config.yaml"]
    child = pexpect.spawn(command[0], command[1:], cwd=str(tmp_path), env=clean_env(), timeout=60)
    try:
        # Nothing is read until the step has written everything: the terminal's buffer is full
        # long before that, so Lynx's screen writes meet EAGAIN.
        wait_for(written.exists, timeout=60)
        child.expect(pexpect.EOF)
        output = child.before
        child.close()
    finally:
        if child.isalive():
            child.close(force=True)

    assert child.exitstatus == 0, output[-2000:]
    numbers = re.findall(rb"line (\d{5}) x{60}\r\n", output)
    assert numbers == [b"%05d" % number for number in range(count)]
    assert b"Step 1 (nonblocking.py) completed successfully." in output
    assert b"Traceback" not in output


def colored_run(tmp_path: Path, terminal: bool, **environ: str) -> str:
    marker_step(tmp_path, "ok.py")
    write_config(tmp_path, "steps:\n  - script: ok.py\n")
    env = clean_env(TERM="xterm")
    del env["NO_COLOR"]
    env.update(environ)
    if not terminal:
        result = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout
    import pexpect

    command = [*lynx_command(), "start", "-cf", "config.yaml"]
    child = pexpect.spawn(command[0], command[1:], cwd=str(tmp_path), env=env, encoding="utf-8", timeout=60)
    try:
        child.expect(pexpect.EOF)
        child.close()
    finally:
        if child.isalive():
            child.close(force=True)
    assert child.exitstatus == 0, child.before
    return str(child.before)


@pytest.mark.parametrize(
    ("terminal", "environ", "colored"),
    [
        (True, {"NO_COLOR": ""}, True),
        (False, {"FORCE_COLOR": "1"}, True),
        (False, {"FORCE_COLOR": ""}, False),
        (True, {"FORCE_COLOR": "1", "TERM": "dumb"}, True),
        (True, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),
    ],
    ids=["empty NO_COLOR", "FORCE_COLOR", "empty FORCE_COLOR", "FORCE_COLOR with TERM=dumb", "both"],
)
def test_no_color_counts_only_when_non_empty_and_force_color_forces_color(
    tmp_path: Path, terminal: bool, environ: dict[str, str], colored: bool
) -> None:
    output = colored_run(tmp_path, terminal, **environ)

    progress = next(line for line in output.splitlines() if "Processing Step 1: ok.py..." in line)
    assert bool(ANSI.search(progress)) == colored, repr(progress)


@pytest.mark.parametrize("words", ["start -cf", "start --config-file", "start -lf", "start --log-file", "validate -cf"])
def test_config_and_log_file_options_complete_file_names(tmp_path: Path, words: str) -> None:
    result = run_lynx(
        cwd=tmp_path,
        env=clean_env(_LYNX_COMPLETE="bash_complete", COMP_WORDS=f"lynx {words} con", COMP_CWORD="3"),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["file,con"]


def test_the_readmes_first_example_is_what_lynx_start_prints(tmp_path: Path) -> None:
    from conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = readme.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    for folder in ("conf", "tasks", "data"):
        shutil.copytree(REPO / folder, tmp_path / folder)

    result = run_lynx("start", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    # Durations in the run summary differ from run to run.
    printed = [DURATION.sub(" N s", line) for line in result.stdout.splitlines()]
    example = [DURATION.sub(" N s", line) for line in example]
    assert printed[0] == example[0]
    assert printed[-1] == example[-1]
    # Each part of the example between "..." lines is printed as written, in order.
    position = 0
    parts: list[list[str]] = [[]]
    for line in example:
        if line == "...":
            parts.append([])
        else:
            parts[-1].append(line)
    for part in parts:
        while printed[position : position + len(part)] != part:
            position += 1
            assert position < len(printed), f"not printed as in the README: {part}"
        position += len(part)
