"""No step left unsupervised (issue 15): when Lynx itself is killed with SIGKILL while a step runs,
its watchdog ends the step's whole tree (SIGTERM, then SIGKILL after the grace), for a one-shot
run and for a step a background scheduler runs in a worker thread, and signals nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from conftest import clean_env, is_gone, lynx_command, run_lynx, wait_for, write_config, write_script

GRACE = 5.0
# A signal-recording process: writes each signal it gets to its file, and ignores SIGTERM when told to.
RECORDER = """
import os, signal, sys, time
name, ignore = sys.argv[1], sys.argv[2] == "ignore"
def got(signum, frame):
    with open(name + ".signals", "a") as handle:
        handle.write(signal.Signals(signum).name + "\\n")
    if signum == signal.SIGTERM and not ignore:
        sys.exit(0)
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(signum, got)
with open(name + ".pid", "w") as handle:
    handle.write(str(os.getpid()))
while True:
    time.sleep(1)
"""
# The step: its own process and a child, which end on SIGTERM, and a grandchild, which ignores it.
TREE = """
import os, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
subprocess.Popen([sys.executable, os.path.join(here, "child.py")])
os.execv(sys.executable, [sys.executable, os.path.join(here, "recorder.py"), "step", "term"])
"""
CHILD = """
import os, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
subprocess.Popen([sys.executable, os.path.join(here, "recorder.py"), "grandchild", "ignore"])
os.execv(sys.executable, [sys.executable, os.path.join(here, "recorder.py"), "child", "term"])
"""


def tree_step(directory: Path) -> Path:
    write_script(directory, "recorder.py", RECORDER)
    write_script(directory, "child.py", CHILD)
    return write_script(directory, "tree.py", TREE)


def started(directory: Path, *names: str) -> dict[str, psutil.Process]:
    """The recorders of ``names`` once each has written its PID."""
    processes = {}
    for name in names:
        path = directory / f"{name}.pid"
        pid = int(wait_for(lambda path=path: path.exists() and path.read_text().strip(), timeout=30))  # type: ignore[misc]
        processes[name] = psutil.Process(pid)
    return processes


def signals_of(directory: Path, name: str) -> list[str]:
    path = directory / f"{name}.signals"
    return path.read_text().split() if path.exists() else []


def gone(process: psutil.Process) -> bool:
    return is_gone(process.pid, process.create_time())


@pytest.fixture
def bystander(tmp_path: Path) -> Iterator[psutil.Process]:
    """A process of the test's own, in a session of its own: nothing Lynx does may signal it."""
    write_script(tmp_path, "recorder.py", RECORDER)
    popen = subprocess.Popen(
        [sys.executable, str(tmp_path / "recorder.py"), str(tmp_path / "bystander"), "ignore"], start_new_session=True
    )
    try:
        yield started(tmp_path, "bystander")["bystander"]
    finally:
        popen.kill()
        popen.wait()


def watchdogs_of(pid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "lynx-watchdog" and f"PID {pid})" in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


def test_sigkill_of_a_one_shot_lynx_ends_the_steps_tree_and_nothing_else(
    lynx_dir: Path, bystander: psutil.Process
) -> None:
    # Step 1 leaves a service running (its own session, left alone by design); step 2 is the tree.
    write_script(
        lynx_dir,
        "service.py",
        f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, {str(lynx_dir / "recorder.py")!r}, {str(lynx_dir / "service")!r}, "ignore"],
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        """,
    )
    tree_step(lynx_dir)
    write_config(lynx_dir, "steps:\n  - script: service.py\n  - script: tree.py\n")
    log = lynx_dir / "lynx.log"
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", "config.yaml", "-lf", str(log)],
        cwd=lynx_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(),
    )
    try:
        tree = started(lynx_dir, "step", "child", "grandchild")
        service = started(lynx_dir, "service")["service"]
        [watchdog] = watchdogs_of(lynx.pid)
        lynx.kill()
        killed = time.monotonic()
        # The watchdog holds none of Lynx's streams: whoever reads Lynx's output sees its end at once.
        lynx.communicate(timeout=2)
        wait_for(lambda: gone(tree["step"]) and gone(tree["child"]), timeout=5)
        ended = time.monotonic() - killed
        assert not gone(tree["grandchild"]), "SIGKILL came before the grace"
        wait_for(lambda: gone(tree["grandchild"]), timeout=GRACE + 3)
        killed_after = time.monotonic() - killed
        wait_for(lambda: gone(watchdog), timeout=5)
    finally:
        if lynx.poll() is None:
            lynx.kill()
            lynx.wait()
    assert ended < 2, f"the step took {ended:.1f} s to end"  # about a second, on a busy 2-core machine
    assert GRACE - 0.5 <= killed_after <= GRACE + 2.5, f"the grandchild was killed after {killed_after:.1f} s"
    assert signals_of(lynx_dir, "step") == ["SIGTERM"]
    assert signals_of(lynx_dir, "child") == ["SIGTERM"]
    assert signals_of(lynx_dir, "grandchild") == ["SIGTERM"]
    # What the first step left running, and a process of someone else's, got nothing.
    assert not gone(service) and signals_of(lynx_dir, "service") == []
    assert not gone(bystander) and signals_of(lynx_dir, "bystander") == []
    text = log.read_text()
    died = f"Step 2 (tree.py) outlived Lynx (PID {lynx.pid}), which has died"
    assert f"{died}: ending it (SIGTERM to PID {tree['step'].pid} and 2 more process(es))." in text
    assert "Step 2 (tree.py) did not exit within 5 s of SIGTERM: killing it (SIGKILL)." in text


def test_sigkill_of_a_background_scheduler_ends_the_step_it_runs_in_a_worker_thread(
    lynx_dir: Path, bystander: psutil.Process
) -> None:
    """PR_SET_PDEATHSIG would fire with the worker thread that started the step, not with Lynx:
    the watchdog is per Lynx process."""
    tree_step(lynx_dir)
    write_config(lynx_dir, "cron: {hour: 0, minute: 0, run_on_start: true}\nsteps:\n  - script: tree.py\n")
    result = run_lynx("start", "-bg", "-lf", "lynx.log", "-cf", "config.yaml", cwd=lynx_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    scheduler = psutil.Process(json.loads((lynx_dir / ".lynx_pid.json").read_text())["pid"])
    tree = started(lynx_dir, "step", "child", "grandchild")
    scheduler.kill()
    killed = time.monotonic()
    wait_for(lambda: gone(tree["step"]) and gone(tree["child"]), timeout=5)
    ended = time.monotonic() - killed
    wait_for(lambda: gone(tree["grandchild"]), timeout=GRACE + 3)
    assert ended < 2, f"the step took {ended:.1f} s to end"  # about a second, on a busy 2-core machine
    assert signals_of(lynx_dir, "grandchild") == ["SIGTERM"]
    assert not gone(bystander) and signals_of(lynx_dir, "bystander") == []
    text = (lynx_dir / "lynx.log").read_text()
    assert f"Step 1 (tree.py) outlived Lynx (PID {scheduler.pid}), which has died: ending it" in text


def test_the_watchdog_ends_with_a_lynx_that_exits_and_leaves_no_trace(lynx_dir: Path) -> None:
    """A normal exit (and Ctrl+C or SIGTERM, which end the step first): the watchdog exits with Lynx,
    and writes nothing."""
    write_script(lynx_dir, "quick.py", "print('quick')")
    write_script(lynx_dir, "slow.py", "import time\nprint('slow', flush=True)\ntime.sleep(60)")
    write_config(lynx_dir, "steps:\n  - script: quick.py\n", name="quick.yaml")
    write_config(lynx_dir, "steps:\n  - script: slow.py\n", name="slow.yaml")
    for number, (config, stop) in enumerate(
        (("quick.yaml", None), ("slow.yaml", signal.SIGTERM), ("slow.yaml", signal.SIGINT))
    ):
        log = lynx_dir / f"{number}.log"
        lynx = subprocess.Popen(
            [*lynx_command(), "start", "-ni", "-cf", config, "-lf", str(log)],
            cwd=lynx_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        try:
            if stop is not None:
                wait_for(lambda log=log: log.exists() and "INFO - slow" in log.read_text())  # type: ignore[misc]
                assert len(watchdogs_of(lynx.pid)) == 1
                lynx.send_signal(stop)
            output, _ = lynx.communicate(timeout=30)
        finally:
            if lynx.poll() is None:
                lynx.kill()
                lynx.wait()
        # It exits at once, without Lynx waiting for it.
        wait_for(lambda: watchdogs_of(lynx.pid) == [], timeout=2)  # noqa: B023 - called at once
        assert lynx.returncode == (0 if stop is None else 128 + stop), output
        assert "has died" not in log.read_text()


def test_the_watchdog_is_not_part_of_lynx_and_does_not_pass_for_it(lynx_dir: Path) -> None:
    """Init adopts it (no tree walk of Lynx's signals it), it has a session of its own (no terminal's
    signals), and its command line is its own, not a copy of Lynx's."""
    write_script(lynx_dir, "slow.py", "import time\nprint('slow', flush=True)\ntime.sleep(60)")
    write_config(lynx_dir, "steps:\n  - script: slow.py\n")
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", "config.yaml"],
        cwd=lynx_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(),
    )
    try:
        [watchdog] = wait_for(lambda: watchdogs_of(lynx.pid), timeout=20)  # type: ignore[misc]
        assert watchdog.pid not in {each.pid for each in psutil.Process(lynx.pid).children(recursive=True)}
        assert os.getsid(watchdog.pid) not in (os.getsid(lynx.pid), os.getsid(0))
        assert watchdog.cmdline()[0] == "lynx-watchdog"
        assert watchdog.cwd() == str(lynx_dir)
        # Only its pipes and /dev/null: none of Lynx's files.
        assert all(not each.path.startswith(str(lynx_dir)) for each in watchdog.open_files())
    finally:
        lynx.kill()
        lynx.wait()
