"""SLURM steps while the controller is away (issue 14, items 11 and 12): no job of Lynx's is left
running without Lynx saying so, and it is cancelled once the controller answers again.

These tests stop the test cluster's slurmctld (by the pid file ``test/slurm/cluster.sh`` keeps in
``$LYNX_SLURM_DIR``, default /tmp/lynx-slurm) for a few seconds, and start it again exactly as
``cluster.sh`` does, even when the test fails, waiting until a job runs again. Other SLURM tests
running at the same moment may fail meanwhile: run this module on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pexpect
import psutil
import pytest
from conftest import clean_env, is_gone, lynx_command, run_lynx, wait_for, write_config
from test_slurm import (
    HOW_TO_RUN,
    _cluster_answers,
    job_id_in_log,
    job_records,
    job_script,
    jobs_of,
    start_lynx_logging,
)

STATE = Path(os.environ.get("LYNX_SLURM_DIR", "/tmp/lynx-slurm"))
READY_TIMEOUT = 90


class Controller:
    """The test cluster's slurmctld: stopped by its pid file, started again as cluster.sh starts it."""

    def __init__(self, state: Path) -> None:
        self.pid_file = state / "run" / "slurmctld.pid"
        self.conf = state / "slurm.conf"
        self.env = clean_env(SLURM_CONF=str(self.conf))

    def pid(self) -> int | None:
        """slurmctld's PID while it runs (a zombie has ended)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            process = psutil.Process(pid)
            if process.name() == "slurmctld" and process.status() != psutil.STATUS_ZOMBIE:
                return pid
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s (cluster.sh's stop_daemon); only slurmctld, nothing else."""
        pid = self.pid()
        assert pid is not None, f"slurmctld is not running (no live PID in {self.pid_file})"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while self.pid() == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid() == pid:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: self.pid() != pid, timeout=5)
        answer = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env=self.env, timeout=30)
        assert "DOWN" in answer.stdout, answer.stdout + answer.stderr

    def start(self) -> None:
        """``slurmctld -f $CONF`` as cluster.sh runs it, then wait until a job really runs (as its job_runs)."""
        if self.pid() is None:
            subprocess.run(["slurmctld", "-f", str(self.conf)], env=self.env, check=True, timeout=60)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._job_runs():
            self._resume_node()
            assert time.monotonic() < deadline, f"no job ran within {READY_TIMEOUT} s of restarting slurmctld"
            time.sleep(0.5)

    def _job_runs(self) -> bool:
        command = ["srun", "--quiet", "--job-name=lynx-test:ready", "--time=1", "true"]
        try:
            return subprocess.run(command, capture_output=True, env=self.env, timeout=20).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _resume_node(self) -> None:
        """A node left down or drained comes back (cluster.sh's resume_node)."""
        nodes = re.findall(r"(?m)^NodeName=(\S+)", self.conf.read_text())
        for node in nodes:
            state = subprocess.run(
                ["sinfo", "-h", "-n", node, "-o", "%t"], capture_output=True, text=True, env=self.env, timeout=30
            ).stdout
            if any(word in state for word in ("drain", "down", "drng", "fail")):
                subprocess.run(
                    ["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, env=self.env,
                    timeout=30,
                )  # fmt: skip


@pytest.fixture
def controller() -> Iterator[Controller]:
    """The cluster's controller, to stop during the test; running again (and taking jobs) afterwards."""
    required = os.environ.get("LYNX_REQUIRE_SLURM") == "1"
    if not _cluster_answers():
        (pytest.fail if required else pytest.skip)(HOW_TO_RUN)
    found = Controller(STATE)
    if found.pid() is None:
        reason = f"slurmctld is not the test cluster's (no live PID in {found.pid_file}): set LYNX_SLURM_DIR"
        (pytest.fail if required else pytest.skip)(reason)
    try:
        yield found
    finally:
        found.start()


@pytest.fixture
def pipeline(controller: Controller) -> Iterator[str]:
    """A pipeline name no other job on the cluster has; its jobs are cancelled after the test, even on failure."""
    name = f"p{uuid.uuid4().hex[:10]}"
    yield name
    controller.start()
    leftovers = jobs_of(name)
    for job_id in leftovers:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    assert not leftovers, f"jobs of {name} were left in the queue: {leftovers}"


def records(directory: Path) -> list[Path]:
    return sorted((directory / ".lynx" / "jobs").glob("*.json"))


def test_lynx_stop_with_the_controller_away_names_the_job_and_the_next_status_cancels_it(
    lynx_dir: Path, pipeline: str, controller: Controller
) -> None:
    """Item 11: the scheduler waits its grace for the controller, then gives up; ``lynx stop`` says which
    job may still run and how to cancel it (exit 1, not success); ``lynx status`` cancels it later."""
    job_script(lynx_dir, "train.py", "time.sleep(600)")
    write_config(lynx_dir, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    started = run_lynx("start", "-bg", "-cf", f"{pipeline}.yaml", "-lf", "lynx.log", cwd=lynx_dir)
    assert started.returncode == 0, started.stdout + started.stderr
    log = lynx_dir / "lynx.log"
    job_id = job_id_in_log(log)
    scheduler = psutil.Process(json.loads((lynx_dir / ".lynx_pid.json").read_text())["pid"])
    controller.stop()
    try:
        stopped = run_lynx("stop", "-y", cwd=lynx_dir, timeout=120)
        wait_for(lambda: is_gone(scheduler.pid, scheduler.create_time()), timeout=5)
        [record] = records(lynx_dir)
    finally:
        controller.start()
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1, output
    assert f"SLURM job {job_id} " in stopped.stdout and "may still be running" in stopped.stdout, output
    assert f"scancel {job_id}" in stopped.stderr, output
    assert stopped.stderr.startswith("Error: ") and len(stopped.stderr.splitlines()) == 1, output
    text = log.read_text()
    assert "The SLURM controller does not answer" in text
    assert f"gave up waiting for the SLURM controller (it did not answer within 5 s): SLURM job {job_id}" in text
    # The job ran on while the controller was away (what the issue saw): the next status here cancels it.
    assert job_id in jobs_of(pipeline)
    status = run_lynx("status", cwd=lynx_dir)
    assert f"Cancelled SLURM job {job_id} " in status.stderr, status.stdout + status.stderr
    wait_for(lambda: job_id not in jobs_of(pipeline), timeout=60)
    assert not record.exists()


def test_a_second_ctrl_c_gives_up_waiting_for_the_controller_and_the_next_start_cancels_the_job(
    lynx_dir: Path, pipeline: str, controller: Controller
) -> None:
    """Item 12: the first Ctrl+C waits for the controller and says how to stop waiting; the second
    exits at once, naming the job that may still run and the scancel command."""
    job_script(lynx_dir, "train.py", "time.sleep(600)")
    write_config(lynx_dir, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    child = pexpect.spawn(
        lynx_command()[0],
        ["start", "-ni", "-cf", f"{pipeline}.yaml"],
        cwd=str(lynx_dir),
        env=clean_env(),
        encoding="utf-8",
        timeout=60,
    )
    try:
        child.expect(r"runs as SLURM job (\d+)")
        job_id = child.match.group(1)
        controller.stop()
        child.sendintr()
        child.expect(rf"The SLURM controller does not answer .*: waiting for it to end SLURM job {job_id}", timeout=20)
        child.expect(r"press Ctrl\+C again to stop waiting and leave the job running")
        time.sleep(0.5)
        child.sendintr()
        pressed = time.monotonic()
        child.expect(rf"gave up waiting for the SLURM controller \(interrupted again\): SLURM job {job_id} ")
        child.expect("may still be running")
        child.expect(f"cancel it with 'scancel {job_id}'")
        child.expect(pexpect.EOF, timeout=15)
        took = time.monotonic() - pressed
    finally:
        child.close(force=True)
        controller.start()
    assert child.exitstatus == 130
    assert took < 5, f"{took:.1f} s after the second Ctrl+C"
    assert [record.name for record in records(lynx_dir)]
    assert job_id in jobs_of(pipeline)
    # The next 'lynx start' here, even of a config without SLURM steps, cancels it.
    (lynx_dir / "local.py").write_text("print('local')\n")
    write_config(lynx_dir, "steps:\n  - script: local.py\n", name="local.yaml")
    started = run_lynx("start", "-ni", "-cf", "local.yaml", cwd=lynx_dir)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"Cancelled SLURM job {job_id} " in started.stdout
    wait_for(lambda: job_id not in jobs_of(pipeline), timeout=60)
    assert records(lynx_dir) == []


def test_a_job_lynx_was_killed_from_with_the_controller_away_is_recorded_and_cancelled_by_the_next_stop(
    lynx_dir: Path, pipeline: str, controller: Controller
) -> None:
    """Lynx SIGKILLed while the controller is away: its watchdog ends srun, records that the job may
    still run (in the log), and the next ``lynx stop`` here cancels it once the controller answers."""
    job_script(lynx_dir, "train.py", "time.sleep(600)")
    write_config(lynx_dir, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    log = lynx_dir / "lynx.log"
    lynx = start_lynx_logging(lynx_dir, f"{pipeline}.yaml", log)
    try:
        job_id = job_id_in_log(log)
        sruns = [each for each in psutil.Process(lynx.pid).children(recursive=True) if each.name() == "srun"]
        controller.stop()
        try:
            lynx.kill()
            lynx.wait()
            # srun goes after the grace; the watchdog says that the job may still run.
            wait_for(lambda: all(is_gone(each.pid, each.create_time()) for each in sruns), timeout=30)
            wait_for(lambda: "may still be running" in log.read_text(), timeout=30)
        finally:
            controller.start()
    finally:
        with contextlib.suppress(OSError):
            lynx.kill()
        lynx.wait()
    text = log.read_text()
    assert f"outlived Lynx (PID {lynx.pid}), which has died" in text
    assert f"SLURM job {job_id} " in text and f"scancel {job_id}" in text
    assert job_id in jobs_of(pipeline)
    stopped = run_lynx("stop", "-y", cwd=lynx_dir, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"Cancelled SLURM job {job_id} " in stopped.stdout
    wait_for(lambda: job_id not in jobs_of(pipeline), timeout=60)
    assert records(lynx_dir) == [] and job_records(lynx_dir)
