"""Steps and their processes (issue 7, points 1-7; issue 10's timeout): when a step is done, what it
leaves running, the signals it gets, job control, double-forked daemons, steps that cannot be
started, and dialog answers that leave the rest of a pipe to the steps. Everything runs the real
``lynx`` in real processes and terminals, and checks from outside.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator

import pexpect
import psutil
import pytest
from conftest import clean_env, kill_processes_in, lynx_command, run_lynx, wait_for, write_config, write_script

# A step gets 5 s after each signal; allow for a slow, shared machine.
ESCALATION_TIMEOUT = 30
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - [A-Z]+ - ")


def pid_helper(directory: Path) -> str:
    """Python source defining ``record_pid(name)``: write this process's PID to ``directory/name`` atomically."""
    return textwrap.dedent(
        f"""
        import os

        def record_pid(name):
            path = os.path.join({str(directory)!r}, name)
            with open(path + ".tmp", "w") as handle:
                handle.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
        """
    )


def pid_step(directory: Path, name: str, body: str) -> Path:
    return write_script(directory, name, pid_helper(directory) + textwrap.dedent(body))


def read_process(path: Path, timeout: float = 30) -> psutil.Process:
    wait_for(lambda: path.exists(), timeout=timeout)
    return psutil.Process(int(path.read_text()))


def gone(process: psutil.Process) -> bool:
    """Ended (a zombie counts as ended; psutil also checks the PID was not reused)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def log_messages(path: Path) -> list[str]:
    """The messages of a Lynx log file, every line checked for its timestamp prefix."""
    messages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = LOG_PREFIX.match(line)
        assert match, f"a log line without its prefix: {line!r}"
        messages.append(line[match.end() :])
    return messages


class Lynx:
    """``lynx args`` started without a terminal, its output going to a file."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.output_path = directory / "lynx-output.txt"
        with open(self.output_path, "wb") as output:
            self.popen = subprocess.Popen(
                [*lynx_command(), *args],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"lynx did not end within {timeout} s:\n{self.output()[-3000:]}")


@pytest.fixture
def lynx_in(tmp_path: Path) -> Iterator[Callable[..., Lynx]]:
    """Start ``lynx`` in tmp_path; it, and whatever its steps left there, is killed after the test."""
    started: list[Lynx] = []

    def launch(*args: str) -> Lynx:
        lynx = Lynx(tmp_path, *args)
        started.append(lynx)
        return lynx

    yield launch
    for lynx in started:
        if lynx.popen.poll() is None:
            lynx.popen.kill()
            lynx.popen.wait(timeout=10)
    kill_processes_in(tmp_path)


class PipedLynx:
    """``lynx start -ni -cf config.yaml`` whose output is read here, line by line."""

    def __init__(self, directory: Path) -> None:
        self.popen = subprocess.Popen(
            [*lynx_command(), "start", "-ni", "-cf", "config.yaml"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        self.output = ""

    def read_until(self, text: str) -> None:
        assert self.popen.stdout is not None
        while text not in self.output:
            line = self.popen.stdout.readline()
            assert line, self.output
            self.output += line

    def finish(self, timeout: float) -> None:
        rest, _ = self.popen.communicate(timeout=timeout)
        self.output += rest


@contextlib.contextmanager
def piped_lynx(directory: Path) -> Iterator[PipedLynx]:
    """A PipedLynx, killed on the way out if it still runs."""
    lynx = PipedLynx(directory)
    try:
        yield lynx
    finally:
        if lynx.popen.poll() is None:
            lynx.popen.kill()
            lynx.popen.communicate()


def spawn_shell(directory: Path) -> pexpect.spawn:
    """An interactive bash with job control in a terminal; Ctrl+D never ends the shell itself."""
    shell = pexpect.spawn(
        "bash",
        ["--norc", "--noprofile", "-i"],
        cwd=str(directory),
        env=clean_env(PS1="$ "),
        encoding="utf-8",
        codec_errors="replace",
        timeout=20,
        dimensions=(50, 200),
    )
    shell.sendline("set -o ignoreeof")
    return shell


def drain_until(shell: pexpect.spawn, condition: Callable[[], object], timeout: float = 30) -> None:
    """Keep reading the terminal (so nothing writing to it can block) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {condition}\n{shell.before[-2000:]}")
        with contextlib.suppress(pexpect.TIMEOUT):
            shell.read_nonblocking(65536, timeout=0.1)


# ---------------------------------------------------------------------------------------------
# 1. A step is done when its process exits
# ---------------------------------------------------------------------------------------------

CHATTY = """
    import subprocess, sys
    subprocess.Popen([sys.executable, "-c", "import time\\nfor i in range(60): print(i, flush=True); time.sleep(0.1)"])
    print("the step exits now")
    """


def test_a_step_is_done_when_its_process_exits_though_a_child_keeps_printing(tmp_path: Path) -> None:
    """The issue's chatty.py: a child printing for 6 s held the whole run for 6 s."""
    write_script(tmp_path, "chatty.py", CHATTY)
    write_script(tmp_path, "after.py", "print('the next step ran')\n")
    write_config(tmp_path, "steps:\n  - script: chatty.py\n  - script: after.py\n")

    began = time.monotonic()
    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path, timeout=60)
    took = time.monotonic() - began

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "the step exits now" in output
    assert "the next step ran" in output
    assert "Step 1 (chatty.py) completed successfully." in output
    assert took < 4.5, f"the run took {took:.1f} s: it waited for the child"


# ---------------------------------------------------------------------------------------------
# 2. What a step leaves running is left alone while Lynx runs
# ---------------------------------------------------------------------------------------------


def test_a_quiet_service_a_step_left_running_can_still_write_while_lynx_runs(
    tmp_path: Path, lynx_in: Callable[..., Lynx]
) -> None:
    """A deploy step starts a service that says nothing for a while: it must not die of SIGPIPE
    on its first write, and its line must not split the next step's line in the log."""
    spoke = tmp_path / "service-spoke"
    pid_step(
        tmp_path,
        "service.py",
        f"""
        import time
        record_pid("service.pid")
        time.sleep(1.5)
        print("the service says hello", flush=True)
        open({str(spoke)!r}, "w").close()  # only reached if the print did not kill it
        time.sleep(120)
        """,
    )
    write_script(
        tmp_path,
        "deploy.py",
        f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, {str(tmp_path / "service.py")!r}])
        print("deployed")
        """,
    )
    write_script(
        tmp_path,
        "wait.py",
        f"""
        import os, sys, time
        sys.stdout.write("waiting for the service... ")
        sys.stdout.flush()
        deadline = time.monotonic() + 30
        while not os.path.exists({str(spoke)!r}) and time.monotonic() < deadline:
            time.sleep(0.05)
        print("it spoke" if os.path.exists({str(spoke)!r}) else "it never spoke")
        sys.exit(0 if os.path.exists({str(spoke)!r}) else 1)
        """,
    )
    write_config(tmp_path, "steps:\n  - script: deploy.py\n  - script: wait.py\n")
    log = tmp_path / "lynx.log"

    lynx = lynx_in("start", "-ni", "-cf", "config.yaml", "-lf", str(log))
    service = read_process(tmp_path / "service.pid")
    code = lynx.wait(timeout=60)

    output = lynx.output()
    assert code == 0, output
    assert not gone(service), "the service died"
    assert "the service says hello" in output
    messages = log_messages(log)
    assert "the service says hello" in messages, messages
    assert "waiting for the service... it spoke" in messages, messages


# ---------------------------------------------------------------------------------------------
# 3. Ctrl+C reaches the step as Ctrl+C
# ---------------------------------------------------------------------------------------------


def test_ctrl_c_reaches_the_step_as_keyboard_interrupt(tmp_path: Path) -> None:
    """The ML idiom ``except KeyboardInterrupt: save_checkpoint()`` runs under Lynx too."""
    write_script(
        tmp_path,
        "train.py",
        f"""
        import time
        try:
            print("training", flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            print("saving checkpoint", flush=True)
            open({str(tmp_path / "checkpoint")!r}, "w").write("saved")
        """,
    )
    write_config(tmp_path, "steps:\n  - script: train.py\n")
    child = pexpect.spawn(
        lynx_command()[0],
        [*lynx_command()[1:], "start", "-ni", "-cf", "config.yaml", "-lf", "lynx.log"],
        cwd=str(tmp_path),
        env=clean_env(),
        encoding="utf-8",
        timeout=ESCALATION_TIMEOUT,
    )
    try:
        child.expect("training")
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        output = child.before
        assert child.exitstatus == 130, output
        assert "saving checkpoint" in output
        assert (tmp_path / "checkpoint").read_text() == "saved"
        messages = log_messages(tmp_path / "lynx.log")
        assert any("interrupted (Ctrl+C): ending it (SIGINT to PID" in m for m in messages), messages
        assert not any("SIGKILL" in m for m in messages), messages
    finally:
        child.close(force=True)
        kill_processes_in(tmp_path)


def test_a_step_ignoring_ctrl_c_gets_sigterm_then_sigkill_each_said(
    tmp_path: Path, lynx_in: Callable[..., Lynx]
) -> None:
    pid_step(
        tmp_path,
        "deaf.py",
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        record_pid("deaf.pid")
        print("deaf", flush=True)
        time.sleep(120)
        """,
    )
    write_config(tmp_path, "steps:\n  - script: deaf.py\n")
    lynx = lynx_in("start", "-ni", "-cf", "config.yaml")
    step = read_process(tmp_path / "deaf.pid")
    wait_for(lambda: "deaf" in lynx.output())

    os.kill(lynx.popen.pid, signal.SIGINT)
    code = lynx.wait(timeout=ESCALATION_TIMEOUT)

    output = lynx.output()
    assert code == 130, output
    wait_for(lambda: gone(step), timeout=10)
    said = [line for line in output.splitlines() if "Step 1 (deaf.py)" in line]
    assert "SIGINT to PID" in said[0], said
    assert "did not exit within 5 s of SIGINT: sending SIGTERM." in said[1], said
    assert "did not exit within 5 s of SIGTERM: killing it (SIGKILL)." in said[2], said
    assert "Traceback" not in output


# ---------------------------------------------------------------------------------------------
# Issue 10: timeout
# ---------------------------------------------------------------------------------------------


def test_a_step_over_its_timeout_is_ended_with_its_children_within_timeout_plus_grace(
    tmp_path: Path, lynx_in: Callable[..., Lynx]
) -> None:
    pid_step(
        tmp_path,
        "child.py",
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it: the grace is used up
        record_pid("child.pid")
        time.sleep(120)
        """,
    )
    pid_step(
        tmp_path,
        "hangs.py",
        f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, {str(tmp_path / "child.py")!r}])
        record_pid("hangs.pid")
        print("hanging", flush=True)
        time.sleep(120)
        """,
    )
    write_script(tmp_path, "never.py", "print('never')\n")
    write_config(tmp_path, "steps:\n  - script: hangs.py\n    timeout: 2\n  - script: never.py\n")

    began = time.monotonic()
    lynx = lynx_in("start", "-ni", "-cf", "config.yaml")
    step, child = read_process(tmp_path / "hangs.pid"), read_process(tmp_path / "child.pid")
    code = lynx.wait(timeout=ESCALATION_TIMEOUT)
    took = time.monotonic() - began

    output = lynx.output()
    assert code == 1, output
    assert gone(step) and gone(child)
    assert "timed out after 2 s" in output
    assert "killing it (SIGKILL)" in output
    assert "never" not in output.replace("never.py", "")
    # 2 s of timeout + 5 s of grace, plus Lynx's own start on a busy machine.
    assert took < 2 + 5 + 6, f"took {took:.1f} s"


# ---------------------------------------------------------------------------------------------
# 4. Ctrl+Z and fg work on the whole thing
# ---------------------------------------------------------------------------------------------


def test_ctrl_z_suspends_the_running_step_with_lynx_and_fg_resumes_both(tmp_path: Path) -> None:
    ticks, go = tmp_path / "ticks.txt", tmp_path / "go"
    pid_step(
        tmp_path,
        "ticking.py",
        f"""
        import os, time
        record_pid("step.pid")
        while not os.path.exists({str(go)!r}):
            with open({str(ticks)!r}, "a") as handle:
                handle.write("tick\\n")
            time.sleep(0.05)
        print("step done")
        """,
    )
    write_config(tmp_path, "steps:\n  - script: ticking.py\n")
    shell = spawn_shell(tmp_path)
    try:
        shell.sendline(f"{shlex.join(lynx_command())} start -ni -cf config.yaml")
        step = read_process(tmp_path / "step.pid")
        lynx = psutil.Process(step.ppid())

        def count() -> int:
            return len(ticks.read_text().splitlines()) if ticks.exists() else 0

        drain_until(shell, lambda: count() >= 3)
        shell.sendcontrol("z")
        drain_until(shell, lambda: lynx.status() == psutil.STATUS_STOPPED)
        drain_until(shell, lambda: step.status() == psutil.STATUS_STOPPED, timeout=10)
        before = count()
        shell.sendline("fg")
        drain_until(shell, lambda: count() >= before + 3)
        assert lynx.status() != psutil.STATUS_STOPPED
        go.touch()
        shell.expect("All 1 step completed successfully.")
        shell.sendline("echo EXIT=$?")
        shell.expect(r"EXIT=(\d+)")
        assert shell.match.group(1) == "0"
        assert "Traceback" not in shell.before
    finally:
        shell.close(force=True)
        kill_processes_in(tmp_path)


def test_time_suspended_with_ctrl_z_does_not_count_towards_a_timeout(tmp_path: Path) -> None:
    """2 s of work under a 4 s timeout, suspended for 5 s in between: the step still completes."""
    ticks = tmp_path / "ticks.txt"
    pid_step(
        tmp_path,
        "work.py",
        f"""
        import time
        record_pid("step.pid")
        for _ in range(40):
            with open({str(ticks)!r}, "a") as handle:
                handle.write("tick\\n")
            time.sleep(0.05)
        print("work done")
        """,
    )
    write_config(tmp_path, "steps:\n  - script: work.py\n    timeout: 4\n")
    shell = spawn_shell(tmp_path)
    try:
        shell.sendline(f"{shlex.join(lynx_command())} start -ni -cf config.yaml")
        step = read_process(tmp_path / "step.pid")
        lynx = psutil.Process(step.ppid())
        drain_until(shell, lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 5)
        shell.sendcontrol("z")
        drain_until(shell, lambda: lynx.status() == psutil.STATUS_STOPPED and step.status() == psutil.STATUS_STOPPED)
        suspended = time.monotonic()
        drain_until(shell, lambda: time.monotonic() - suspended > 5)  # longer than the whole timeout
        shell.sendline("fg")
        shell.expect("Step 1 \\(work.py\\) (completed successfully|timed out)")
        assert shell.match.group(1) == "completed successfully", shell.before
        shell.sendline("echo EXIT=$?")
        shell.expect(r"EXIT=(\d+)")
        assert shell.match.group(1) == "0"
    finally:
        shell.close(force=True)
        kill_processes_in(tmp_path)


def test_after_a_background_start_and_fg_ctrl_d_ends_the_schedule(tmp_path: Path) -> None:
    write_script(tmp_path, "step.py", "print('fired')\n")
    write_config(tmp_path, "cron:\n  second: '*/2'\nsteps:\n  - script: step.py\n")
    shell = spawn_shell(tmp_path)
    try:
        shell.sendline(f"{shlex.join(lynx_command())} start -ni -cf config.yaml &")
        shell.sendline("echo LYNX_PID=$!")
        shell.expect(r"LYNX_PID=(\d+)")
        lynx = psutil.Process(int(shell.match.group(1)))
        shell.expect("fired")
        shell.sendline("fg")
        # The shell hands the terminal over (no signal tells Lynx): wait until it has.
        drain_until(shell, lambda: os.tcgetpgrp(shell.child_fd) == os.getpgid(lynx.pid))
        shell.sendeof()
        shell.expect("End of input")
        shell.expect("The schedule has ended.")
        drain_until(shell, lambda: gone(lynx))
        shell.sendline("echo EXIT=$?")
        shell.expect(r"EXIT=(\d+)")
        assert shell.match.group(1) == "0"
        assert "Traceback" not in shell.before
    finally:
        shell.close(force=True)
        kill_processes_in(tmp_path)


# ---------------------------------------------------------------------------------------------
# 5. Double-forked daemons are found
# ---------------------------------------------------------------------------------------------

DAEMON_STEP = """
    import os, signal, sys, time
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            # The classic daemon: its own session, not a child of the step, no tie to Lynx's pipe.
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            record_pid("daemon.pid")
            while True:
                time.sleep(1)
        os._exit(0)
    os.wait()
    record_pid("step.pid")
    print("daemon started", flush=True)
    time.sleep(120)
    """


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child subreaper is Linux's")
def test_ctrl_c_ends_a_daemon_the_step_started_with_a_double_fork(tmp_path: Path, lynx_in: Callable[..., Lynx]) -> None:
    pid_step(tmp_path, "daemonize.py", DAEMON_STEP)
    write_config(tmp_path, "steps:\n  - script: daemonize.py\n")
    lynx = lynx_in("start", "-ni", "-cf", "config.yaml")
    daemon = read_process(tmp_path / "daemon.pid")
    wait_for(lambda: "daemon started" in lynx.output())
    step = read_process(tmp_path / "step.pid")
    # Neither in the step's tree nor in its session: only its parent, Lynx, still knows it.
    assert daemon.pid not in {child.pid for child in step.children(recursive=True)}
    assert os.getsid(daemon.pid) != os.getsid(step.pid)

    os.kill(lynx.popen.pid, signal.SIGINT)
    code = lynx.wait(timeout=ESCALATION_TIMEOUT)

    assert code == 130, lynx.output()
    wait_for(lambda: gone(daemon), timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child subreaper is Linux's")
def test_lynx_stop_ends_a_daemon_the_step_started_with_a_double_fork(lynx_dir: Path) -> None:
    pid_step(lynx_dir, "daemonize.py", DAEMON_STEP)
    write_config(lynx_dir, "cron:\n  second: '*/2'\nsteps:\n  - script: daemonize.py\n")
    started = run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", "lynx.log", cwd=lynx_dir, timeout=30)
    assert started.returncode == 0, started.stdout + started.stderr
    daemon = read_process(lynx_dir / "daemon.pid")
    wait_for(lambda: "daemon started" in (lynx_dir / "lynx.log").read_text())

    stopped = run_lynx("stop", "-y", cwd=lynx_dir, timeout=40)

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_for(lambda: gone(daemon), timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child subreaper is Linux's")
def test_orphans_that_exit_are_reaped_not_left_as_zombies_of_lynx(tmp_path: Path, lynx_in: Callable[..., Lynx]) -> None:
    go = tmp_path / "go"
    pid_step(
        tmp_path,
        "orphans.py",
        """
        import os, time
        if os.fork() == 0:
            if os.fork() == 0:
                record_pid("orphan.pid")
                time.sleep(0.3)
                os._exit(0)
            os._exit(0)
        os.wait()
        while not os.path.exists(os.path.join(os.path.dirname(__file__), "orphan.pid")):
            time.sleep(0.01)
        time.sleep(1)  # the orphan ends while the step still runs
        """,
    )
    pid_step(
        tmp_path,
        "second.py",
        f"""
        import os, time
        record_pid("second.pid")
        while not os.path.exists({str(go)!r}):
            time.sleep(0.05)
        """,
    )
    write_config(tmp_path, "steps:\n  - script: orphans.py\n  - script: second.py\n")
    lynx = lynx_in("start", "-ni", "-cf", "config.yaml")
    orphan_pid = int(wait_for(lambda: (tmp_path / "orphan.pid").exists() and (tmp_path / "orphan.pid").read_text()))
    read_process(tmp_path / "second.pid")
    try:
        zombies = [
            child.pid for child in psutil.Process(lynx.popen.pid).children() if child.status() == psutil.STATUS_ZOMBIE
        ]
        assert zombies == [], f"zombies of Lynx: {zombies} (the orphan was {orphan_pid})"
    finally:
        go.touch()
    assert lynx.wait(timeout=30) == 0, lynx.output()


# ---------------------------------------------------------------------------------------------
# 6. A step that cannot be launched is a failed step
# ---------------------------------------------------------------------------------------------


def test_an_argument_over_the_kernels_limit_fails_the_step_without_a_traceback(tmp_path: Path) -> None:
    write_script(tmp_path, "step.py", "print('ran')\n")
    write_config(tmp_path, f"steps:\n  - script: step.py\n    arguments:\n      - {'x' * 200_000}\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "Step 1 (step.py) could not be started: Argument list too long" in output
    assert "ran" not in output.replace("(step.py)", "")


def test_a_script_whose_interpreter_is_missing_fails_the_step(tmp_path: Path) -> None:
    script = write_script(tmp_path, "tool.sh", "#!/nonexistent/interpreter\necho ran\n")
    script.chmod(0o755)
    write_config(tmp_path, "steps:\n  - script: tool.sh\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "Step 1 (tool.sh) could not be started: No such file or directory" in output


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory another user can read and write (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="lynx-nproc-"))
    path.chmod(0o777)
    yield path
    kill_processes_in(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("prlimit") is None,
    reason="needs root to run Lynx as another user under a process limit",
)
def test_a_fork_that_fails_fails_the_step_without_a_traceback(open_directory: Path) -> None:
    """As a user at its process limit (RLIMIT_NPROC), the fork for the step fails with EAGAIN."""
    step = write_script(open_directory, "step.py", "print('ran')\n")
    config = write_config(open_directory, f"steps:\n  - script: {step}\n")
    for path in (step, config):
        path.chmod(0o644)
    nobody = 65534
    as_nobody = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", "--"]
    env = clean_env(HOME=str(open_directory))
    usable = subprocess.run(
        [*as_nobody, *lynx_command(), "--version"], cwd=open_directory, env=env, capture_output=True, text=True
    )
    if usable.returncode != 0:
        pytest.skip(
            f"user nobody cannot run this Lynx ({lynx_command()[0]}): install it where other users can "
            f"read it, as .ci/run does ({usable.stderr.strip()[:200]})"
        )
    already = sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == nobody)
    limit = already + 1  # Lynx itself, and not one more
    command = ["prlimit", f"--nproc={limit}:{limit}", "--", *as_nobody]
    result = subprocess.run(
        [*command, *lynx_command(), "start", "-ni", "-cf", str(config)],
        cwd=open_directory,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "could not be started: Resource temporarily unavailable" in output
    assert "ran" not in output.replace("(the system", "")


def test_a_script_that_lost_its_execute_bit_fails_each_run_and_keep_running_goes_on(
    tmp_path: Path, lynx_in: Callable[..., Lynx]
) -> None:
    script = write_script(tmp_path, "tool.sh", "#!/bin/sh\necho tool ran\n")
    script.chmod(0o755)
    write_config(tmp_path, "cron:\n  second: '*/2'\nsteps:\n  - script: tool.sh\n")
    lynx = lynx_in("start", "-ni", "-kr", "-cf", "config.yaml")
    wait_for(lambda: "Lynx is scheduled" in lynx.output())
    script.chmod(script.stat().st_mode & ~(stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))

    failure = "Step 1 (tool.sh) could not be started: Permission denied"
    wait_for(lambda: lynx.output().count("--keep-running: next run at") >= 2 and failure in lynx.output(), timeout=30)

    assert lynx.popen.poll() is None, lynx.output()
    os.kill(lynx.popen.pid, signal.SIGTERM)
    assert lynx.wait(timeout=ESCALATION_TIMEOUT) == 143
    output = lynx.output()
    assert output.count(failure) >= 2, output
    assert "Traceback" not in output


# ---------------------------------------------------------------------------------------------
# 7. Piped dialog answers leave the rest of the input to the steps
# ---------------------------------------------------------------------------------------------


def test_piped_dialog_answers_leave_the_next_lines_to_the_steps(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "flaky.py",
        """
        import os, sys
        first = not os.path.exists("flaky-ran")
        open("flaky-ran", "w").close()
        sys.exit(1 if first else 0)
        """,
    )
    write_script(tmp_path, "greet.py", "name = input('Your name? ')\nprint(f'Hello, {name}!')\n")
    write_config(tmp_path, "steps:\n  - script: flaky.py\n  - script: greet.py\n")

    result = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path, input="y\nBob\n")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Hello, Bob!" in output
    assert "Traceback" not in output


def test_answers_typed_ahead_on_a_pipe_are_read_one_line_per_question(tmp_path: Path) -> None:
    """``printf 'n\\ny\\n'``: the first line answers the first question, the second the second."""
    write_script(
        tmp_path,
        "flaky.py",
        """
        import os, sys
        count = len(open("runs").read()) if os.path.exists("runs") else 0
        open("runs", "a").write("x")
        sys.exit(1 if count == 0 else 0)
        """,
    )
    write_config(tmp_path, "steps:\n  - script: flaky.py\n")

    result = run_lynx("start", "-cf", "config.yaml", cwd=tmp_path, input="n\ny\n")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Restarting pipeline..." in output
    assert json.dumps((tmp_path / "runs").read_text()) == '"xx"'


# ---------------------------------------------------------------------------------------------
# What a review of the process code found
# ---------------------------------------------------------------------------------------------


def test_a_timeout_holds_for_a_step_that_closed_its_output(tmp_path: Path) -> None:
    """A step that redirects its own output (a log of its own) still has the pipe's end, not its own."""
    script = write_script(tmp_path, "quiet.sh", '#!/bin/sh\necho "to Lynx"\nexec >own.log 2>&1\nsleep 30\n')
    script.chmod(0o755)
    write_config(tmp_path, "steps:\n  - script: quiet.sh\n    timeout: 2\n")

    began = time.monotonic()
    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)
    took = time.monotonic() - began

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Step 1 (quiet.sh) timed out after 2 s and was ended." in output
    assert took < 2 + 5 + 10, f"took {took:.1f} s"


def test_what_a_step_starts_while_it_is_being_ended_is_ended_too(tmp_path: Path) -> None:
    """A trap that starts a process on SIGTERM: the step's group stays pinned until the end, and each
    round looks for such late children."""
    write_script(
        tmp_path,
        "trap.sh",
        f"""#!/bin/sh
        trap 'sleep 300 & echo $! > {tmp_path / "late.pid"}; exit 1' TERM
        echo ready
        while true; do sleep 0.1; done
        """,
    ).chmod(0o755)
    write_config(tmp_path, "steps:\n  - script: trap.sh\n    timeout: 1\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    late = int(wait_for(lambda: (tmp_path / "late.pid").exists() and (tmp_path / "late.pid").read_text().strip()))
    assert not psutil.pid_exists(late) or psutil.Process(late).status() == psutil.STATUS_ZOMBIE


def stubborn_then_second(directory: Path) -> None:
    """stubborn.py ignores SIGTERM (so its end takes the grace); second.py leaves 'second-ran' when it runs."""
    write_script(
        directory,
        "stubborn.py",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n",
    )
    write_script(directory, "second.py", "open('second-ran', 'w').close()\n")


def test_ctrl_c_while_a_timed_out_step_is_ended_still_stops_lynx(tmp_path: Path) -> None:
    """The Ctrl+C is held while the step is ended, then acted on: the next step never starts."""
    stubborn_then_second(tmp_path)
    write_config(tmp_path, "steps:\n  - script: stubborn.py\n    timeout: 1\n  - script: second.py\n")
    with piped_lynx(tmp_path) as lynx:
        lynx.read_until("timed out after 1 s: ending it")
        lynx.popen.send_signal(signal.SIGINT)
        lynx.finish(timeout=ESCALATION_TIMEOUT)
    assert lynx.popen.returncode == 130, lynx.output
    assert not (tmp_path / "second-ran").exists(), lynx.output
    assert "killing it (SIGKILL)" in lynx.output


def test_two_quick_ctrl_c_leave_no_step_running(tmp_path: Path) -> None:
    """The second Ctrl+C, a few milliseconds after the first, cannot cut the step's end short."""
    write_script(
        tmp_path,
        "sleeper.py",
        f"import os, time\nopen({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
    )
    write_config(tmp_path, "steps:\n  - script: sleeper.py\n")
    for gap in (0.001, 0.005, 0.01):
        (tmp_path / "pid").unlink(missing_ok=True)
        lynx = subprocess.Popen(
            [*lynx_command(), "start", "-ni", "-cf", "config.yaml"],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=clean_env(),
        )
        try:
            step = int(wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text()))
            lynx.send_signal(signal.SIGINT)
            time.sleep(gap)
            lynx.send_signal(signal.SIGINT)
            assert lynx.wait(timeout=ESCALATION_TIMEOUT) == 130
        finally:
            if lynx.poll() is None:
                lynx.kill()
                lynx.wait()
        assert wait_for(lambda step=step: not psutil.pid_exists(step), timeout=10), f"the step outlived Lynx ({gap} s)"


def test_what_a_step_starts_while_ctrl_c_ends_it_on_a_schedule_is_ended_too(tmp_path: Path) -> None:
    """On a schedule the main thread ends the step while the step's own thread relays it: that thread
    must not reap the step early, or the late process would no longer be found through its group."""
    write_script(
        tmp_path,
        "trap.sh",
        f"""#!/bin/sh
        sleep 2 &
        trap 'sleep 300 >/dev/null 2>&1 & echo $! > {tmp_path / "late.pid"}; exit 1' INT TERM
        echo ready
        while true; do sleep 0.1; done
        """,
    ).chmod(0o755)
    # 'sleep 2 &' ignores SIGINT (a background job of sh): the main thread waits for it, while the
    # step's own thread sees the step exit; the late process does not hold the output pipe.
    write_config(tmp_path, "cron: {hour: 0, minute: 0, run_on_start: true}\nsteps:\n  - script: trap.sh\n")
    with piped_lynx(tmp_path) as lynx:
        lynx.read_until("ready")
        lynx.popen.send_signal(signal.SIGINT)
        lynx.finish(timeout=ESCALATION_TIMEOUT)
    assert lynx.popen.returncode == 130, lynx.output
    late = int(wait_for(lambda: (tmp_path / "late.pid").exists() and (tmp_path / "late.pid").read_text().strip()))
    assert not psutil.pid_exists(late) or psutil.Process(late).status() == psutil.STATUS_ZOMBIE, lynx.output


def test_ctrl_z_then_ctrl_c_while_a_timed_out_step_is_ended_still_stops_lynx(tmp_path: Path) -> None:
    """Held while the step is ended: the Ctrl+C wins over the Ctrl+Z that came first (stopping makes it moot)."""
    stubborn_then_second(tmp_path)
    write_config(
        tmp_path,
        "steps:\n  - script: stubborn.py\n    timeout: 1\n    continue_on_error: true\n  - script: second.py\n",
    )
    with piped_lynx(tmp_path) as lynx:
        lynx.read_until("timed out after 1 s: ending it")
        # One after the other (sent together, the kernel would hand over SIGINT first, by number).
        lynx.popen.send_signal(signal.SIGTSTP)
        time.sleep(0.3)
        lynx.popen.send_signal(signal.SIGINT)
        lynx.finish(timeout=ESCALATION_TIMEOUT)
    assert lynx.popen.returncode == 130, lynx.output
    assert not (tmp_path / "second-ran").exists(), lynx.output
