"""Steps with a ``slurm:`` key, end to end through the CLI on a real SLURM cluster.

The cluster tests need a running cluster: on a Debian machine, as root, ``test/slurm/cluster.sh start``
(CI does it, and sets LYNX_REQUIRE_SLURM=1 so that they fail instead of skipping).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pexpect
import psutil
import pytest
from conftest import clean_env, is_gone, lynx_command, run_lynx, wait_for, write_config, write_script

from lynx.config import load_pipeline

HOW_TO_RUN = "no SLURM cluster answers: run 'test/slurm/cluster.sh start' as root on Debian, then the tests again"


def _cluster_answers() -> bool:
    if shutil.which("srun") is None or shutil.which("scontrol") is None:
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def cluster() -> None:
    """A SLURM cluster that takes jobs; skip (or fail, with LYNX_REQUIRE_SLURM=1) without one."""
    if _cluster_answers():
        return
    if os.environ.get("LYNX_REQUIRE_SLURM") == "1":
        pytest.fail(f"LYNX_REQUIRE_SLURM=1 but {HOW_TO_RUN}")
    pytest.skip(HOW_TO_RUN)


@pytest.fixture
def pipeline(tmp_path: Path, cluster: None) -> Iterator[str]:
    """A pipeline name no other job on the cluster has; its jobs are cancelled after the test, even on failure."""
    name = f"p{uuid.uuid4().hex[:10]}"
    yield name
    leftovers = jobs_of(name)
    for job_id in leftovers:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    assert not leftovers, f"jobs of {name} were left in the queue: {leftovers}"


def jobs_of(pipeline: str) -> list[str]:
    """IDs of the jobs of ``pipeline`` that squeue lists (pending, running or completing)."""
    listing = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, timeout=30).stdout
    return [line.split("|", 1)[0] for line in listing.splitlines() if f"|lynx:{pipeline}:" in line]


def start_lynx_logging(directory: Path, config: str, log: Path) -> subprocess.Popen[bytes]:
    """``lynx start -ni -cf config -lf log`` in the background of the test, nothing on its screen."""
    return subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", config, "-lf", str(log)],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )


def job_id_in_log(log: Path) -> str:
    """The id of the SLURM job Lynx's log file says its step runs as, once it says so."""
    found = wait_for(lambda: log.exists() and re.search(r"runs as SLURM job (\d+)", log.read_text()), timeout=60)
    return found.group(1)  # type: ignore[attr-defined]


def job_script(directory: Path, name: str, body: str = "") -> Path:
    """A step that records its job id, node, directory and FOO, prints 'started', runs ``body``."""
    body = body.replace("\n", "\n" + " " * 8)  # to the indentation of the text below, which is dedented
    return write_script(
        directory,
        name,
        f"""
        import json, os, sys, time
        record = {{key: os.environ.get(key) for key in ("SLURM_JOB_ID", "SLURMD_NODENAME", "FOO")}}
        record["cwd"] = os.getcwd()
        record["argv"] = sys.argv[1:]
        with open({str(directory / "jobs.jsonl")!r}, "a") as handle:
            handle.write(json.dumps(record) + "\\n")
        print("started", flush=True)
        {body}
        """,
    )


def job_records(directory: Path) -> list[dict[str, str]]:
    path = directory / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@contextlib.contextmanager
def running_lynx(directory: Path, pipeline: str) -> Iterator[subprocess.Popen[str]]:
    """``lynx start -ni`` of the pipeline's config, its output piped; killed on the way out if still running."""
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", f"{pipeline}.yaml"],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )
    try:
        yield lynx
    finally:
        if lynx.poll() is None:
            lynx.kill()
            lynx.communicate()


# --- config (no cluster needed) ---


def test_slurm_key_gives_srun_options_defaults_and_anchors(tmp_path: Path) -> None:
    write_script(tmp_path, "a.py", "")
    config = write_config(
        tmp_path,
        """
        configs:
          - gpu: &gpu {partition: gpu, gres: "gpu:1", time: "02:00:00", cpus-per-task: 8, exclusive: true, hold: false}
        steps:
          - {script: a.py}
          - {script: a.py, slurm: {}}
          - {script: a.py, slurm: true}
          - {script: a.py, slurm: *gpu}
          - {script: a.py, slurm: *gpu}
          - {script: a.py, slurm: false}
        """,
    )
    steps = load_pipeline(config, cwd=str(tmp_path)).steps
    gpu = (("partition", "gpu"), ("gres", "gpu:1"), ("time", "02:00:00"), ("cpus-per-task", "8"), ("exclusive", True))
    assert [step.slurm for step in steps] == [None, (), (), gpu, gpu, None]


@pytest.mark.parametrize(
    ("slurm", "message"),
    [
        ("{partiton: gpu}", "slurm: unknown srun option 'partiton' (did you mean 'partition'?)"),
        ("{job-name: x}", "slurm: 'job-name' is set by Lynx"),
        ("{chdir: /tmp}", "slurm: 'chdir' is set by Lynx (use the step's 'cwd')"),
        ("{partition: [a, b]}", "slurm: 'partition' must be a string or number, not a list"),
        ("{partition: }", "slurm: 'partition' must be a string or number, not a null (give a value"),
        ("gpu", "'slurm' must be a mapping of srun options (or true for the defaults), not a string"),
    ],
)
def test_bad_slurm_key_is_one_error_naming_the_step(tmp_path: Path, slurm: str, message: str) -> None:
    write_script(tmp_path, "a.py", "")
    write_config(tmp_path, f"steps:\n  - script: a.py\n    slurm: {slurm}\n")
    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: config.yaml: step 1 (a.py): ")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def start_and_validate(directory: Path, config: str, env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """``lynx start -ni`` and ``lynx validate`` of ``config``: the same checks, so the same answer."""
    return [
        run_lynx(*command, "-cf", config, cwd=directory, env=env, timeout=120)
        for command in (["start", "-ni"], ["validate"])
    ]


def test_srun_missing_is_one_error_before_anything_runs(tmp_path: Path) -> None:
    job_script(tmp_path, "local.py")
    job_script(tmp_path, "remote.py")
    write_config(tmp_path, "steps:\n  - script: local.py\n  - script: remote.py\n    slurm: {}\n")
    bin_dir = Path(sys.executable).parent
    for result in start_and_validate(tmp_path, "config.yaml", clean_env(PATH=str(bin_dir))):
        assert result.returncode == 2
        assert result.stderr == (
            "Error: config.yaml: step 2 (remote.py): runs on SLURM, but srun is not on PATH "
            "(install the SLURM client commands)\n"
        )
        assert result.stdout == ""
    assert job_records(tmp_path) == []


def test_cluster_not_answering_is_one_error_before_anything_runs(tmp_path: Path, cluster: None) -> None:
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    # The same cluster, but a controller port nothing listens on.
    (tmp_path / "slurm.conf").write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=6999", conf))
    job_script(tmp_path, "local.py")
    job_script(tmp_path, "remote.py")
    write_config(tmp_path, "steps:\n  - script: local.py\n  - script: remote.py\n    slurm: {}\n")
    env = clean_env(SLURM_CONF=str(tmp_path / "slurm.conf"))
    began = time.monotonic()
    results = start_and_validate(tmp_path, "config.yaml", env)
    # scontrol ping says so at once; srun --test-only alone would take 18 s to give up.
    assert time.monotonic() - began < 10
    for result in results:
        assert result.returncode == 2
        assert result.stderr.startswith(
            "Error: config.yaml: step 2 (remote.py): the SLURM controller does not answer (scontrol ping"
        )
        assert len(result.stderr.splitlines()) == 1
    assert results[0].stderr == results[1].stderr
    assert job_records(tmp_path) == []


@pytest.mark.parametrize(
    ("slurm", "said"),
    [
        ("{partition: nope}", "Invalid partition name specified"),
        ("{time: abc}", "Invalid --time specification"),
        # The test cluster has 8 CPUs.
        ("{cpus-per-task: 64}", "Requested node configuration is not available"),
    ],
)
def test_options_slurm_refuses_are_one_error_from_start_and_validate_alike(
    tmp_path: Path, pipeline: str, slurm: str, said: str
) -> None:
    job_script(tmp_path, "local.py")
    job_script(tmp_path, "train.py")
    write_config(
        tmp_path,
        f"steps:\n  - script: local.py\n  - script: train.py\n    slurm: {{time: 5}}\n"
        f"  - script: train.py\n    name: big\n    slurm: {slurm}\n",
        name=f"{pipeline}.yaml",
    )
    for result in start_and_validate(tmp_path, f"{pipeline}.yaml", clean_env()):
        assert result.returncode == 2, result.stdout + result.stderr
        assert (
            result.stderr
            == f"Error: {pipeline}.yaml: step 3 (big): SLURM would refuse the job: {said} (srun --test-only)\n"
        )
        assert result.stdout == ""
    assert job_records(tmp_path) == []


# --- on the cluster ---


def test_output_arrives_live_and_the_job_is_recorded(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "train.py", "while not os.path.exists('go'): time.sleep(0.05)\nprint('finished')")
    write_config(tmp_path, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    log = tmp_path / "lynx.log"
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", f"{pipeline}.yaml", "-lf", str(log)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        wait_for(lambda: log.exists() and "INFO - started" in log.read_text(), timeout=60)
        # The job still runs (it waits for 'go') while its first line is already in the log.
        assert len(jobs_of(pipeline)) == 1
        wait_for(lambda: "as SLURM job" in log.read_text(), timeout=30)
        (tmp_path / "go").touch()
        assert lynx.wait(timeout=60) == 0
    finally:
        if lynx.poll() is None:
            lynx.kill()
            lynx.wait()
    text = log.read_text()
    [record] = job_records(tmp_path)
    assert f"Step 1 (train.py) runs as SLURM job {record['SLURM_JOB_ID']} on {record['SLURMD_NODENAME']}." in text
    assert "INFO - finished" in text
    [run] = [json.loads(line) for line in (tmp_path / ".lynx" / "runs.jsonl").read_text().splitlines()]
    assert run["steps"][0]["job_id"] == record["SLURM_JOB_ID"]
    assert run["steps"][0]["node"] == record["SLURMD_NODENAME"]


def test_exit_codes_come_through(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "good.py")
    job_script(tmp_path, "bad.py", "sys.exit(3)")
    write_config(tmp_path, "steps:\n  - script: good.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    write_config(tmp_path, "steps:\n  - script: bad.py\n    slurm: {}\n", name=f"{pipeline}-bad.yaml")
    good = run_lynx("start", "-ni", "-cf", f"{pipeline}.yaml", cwd=tmp_path, env=clean_env())
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Step 1 (good.py) completed successfully." in good.stdout
    bad = run_lynx("start", "-ni", "-cf", f"{pipeline}-bad.yaml", cwd=tmp_path, env=clean_env())
    assert bad.returncode == 1
    assert "Step 1 (bad.py) failed with exit code 3." in bad.stdout
    assert [record["SLURM_JOB_ID"] is not None for record in job_records(tmp_path)] == [True, True]


def test_env_cwd_and_arguments_reach_the_job(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "tasks/a.py")
    (tmp_path / "work").mkdir()
    write_config(
        tmp_path,
        """
        steps:
          - script: tasks/a.py
            arguments: ["--title 'two words'", "$HOME"]
            env: {FOO: "bar baz"}
            cwd: work
            slurm: {ntasks: 1}
          - script: tasks/a.py
            slurm: {}
        """,
        name=f"{pipeline}.yaml",
    )
    result = run_lynx("start", "-ni", "-cf", f"{pipeline}.yaml", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = job_records(tmp_path)
    assert first["FOO"] == "bar baz"
    assert first["cwd"] == str(tmp_path / "work")
    assert first["argv"] == ["--title", "two words", "$HOME"]
    assert second["FOO"] is None
    assert second["cwd"] == str(tmp_path)


def _spawn(tmp_path: Path, pipeline: str) -> pexpect.spawn:
    return pexpect.spawn(
        lynx_command()[0],
        ["start", "-ni", "-cf", f"{pipeline}.yaml"],
        cwd=str(tmp_path),
        env=clean_env(),
        encoding="utf-8",
        timeout=60,
    )


CHECKPOINT_ON_CTRL_C = """
try:
    time.sleep(600)
except KeyboardInterrupt:
    print("saving a checkpoint", flush=True)
    open("checkpoint", "w").close()
"""


CHECKPOINT_ON_SIGTERM = """
import signal
def on_sigterm(signum, frame):
    print("saving a checkpoint", flush=True)
    open("checkpoint", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_sigterm)
time.sleep(600)
"""


def ctrl_c_and_expect(directory: Path, pipeline: str, started: str, *expected: str) -> None:
    """Run the pipeline in a terminal; once ``started`` shows, press Ctrl+C and expect the lines
    ``expected`` in order; Lynx exits 130 and leaves no job in the queue."""
    child = _spawn(directory, pipeline)
    try:
        child.expect(started)
        assert len(jobs_of(pipeline)) == 1
        child.sendintr()
        for pattern in expected:
            child.expect(pattern)
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    assert jobs_of(pipeline) == []


def test_ctrl_c_reaches_a_running_job_as_keyboard_interrupt(tmp_path: Path, pipeline: str) -> None:
    """As for a local step: SIGINT first (scancel --signal=INT), so the job can save its checkpoint."""
    job_script(tmp_path, "train.py", CHECKPOINT_ON_CTRL_C)
    write_config(tmp_path, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    ctrl_c_and_expect(
        tmp_path,
        pipeline,
        "started",
        r"sending SIGINT to SLURM job \d+ \(scancel\)",
        "saving a checkpoint",
        r"SLURM job \d+ has ended\.",
    )
    assert (tmp_path / "checkpoint").exists()


def test_ctrl_c_cancels_a_job_that_ignores_sigint_after_the_grace(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "train.py", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)")
    write_config(tmp_path, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    ctrl_c_and_expect(
        tmp_path,
        pipeline,
        "started",
        r"sending SIGINT to SLURM job \d+ \(scancel\)",
        r"SLURM job \d+ still runs 5 s after SIGINT: sending SIGTERM\.",
        r"SLURM job \d+ has ended\.",
    )


def test_ctrl_c_cancels_a_pending_job(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "train.py", "time.sleep(600)")
    write_config(tmp_path, "steps:\n  - script: train.py\n    slurm: {begin: now+3600}\n", name=f"{pipeline}.yaml")
    ctrl_c_and_expect(
        tmp_path,
        pipeline,
        r"queued as SLURM job \d+ \(BeginTime\)",
        r"cancelling SLURM job \d+ \(scancel\)",
        r"SLURM job \d+ has ended\.",
    )


@pytest.mark.parametrize("state", ["running", "pending"])
def test_lynx_stop_cancels_the_job(lynx_dir: Path, pipeline: str, state: str) -> None:
    job_script(lynx_dir, "train.py", "time.sleep(600)")
    slurm = "{}" if state == "running" else "{begin: now+3600}"
    write_config(lynx_dir, f"steps:\n  - script: train.py\n    slurm: {slurm}\n", name=f"{pipeline}.yaml")
    started = run_lynx("start", "-bg", "-cf", f"{pipeline}.yaml", "-lf", "lynx.log", cwd=lynx_dir, env=clean_env())
    assert started.returncode == 0, started.stdout + started.stderr
    log = lynx_dir / "lynx.log"
    wait_for(lambda: log.exists() and re.search(r"(runs|queued) as SLURM job", log.read_text()), timeout=60)
    assert len(jobs_of(pipeline)) == 1
    stopped = run_lynx("stop", "-y", cwd=lynx_dir, env=clean_env(), timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert jobs_of(pipeline) == []
    assert re.search(r"(sending SIGTERM to|cancelling) SLURM job \d+ \(scancel\)", log.read_text())


def test_timeout_cancels_the_job(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "train.py", "time.sleep(600)")
    write_config(tmp_path, "steps:\n  - script: train.py\n    timeout: 3\n    slurm: {}\n", name=f"{pipeline}.yaml")
    began = time.monotonic()
    result = run_lynx("start", "-ni", "-cf", f"{pipeline}.yaml", cwd=tmp_path, env=clean_env())
    assert result.returncode == 1
    assert time.monotonic() - began < 45
    assert re.search(r"Step 1 \(train\.py\) timed out after 3 s: sending SIGTERM to SLURM job \d+", result.stdout)
    assert "Step 1 (train.py) timed out after 3 s and was ended." in result.stdout
    assert jobs_of(pipeline) == []


def test_job_cancelled_outside_lynx_fails_the_step_and_retries_resubmit(tmp_path: Path, pipeline: str) -> None:
    # The first attempt waits to be cancelled from outside; the second succeeds.
    job_script(tmp_path, "train.py", "if len(open('jobs.jsonl').readlines()) == 1: time.sleep(600)")
    write_config(tmp_path, "steps:\n  - script: train.py\n    retries: 1\n    slurm: {}\n", name=f"{pipeline}.yaml")
    with running_lynx(tmp_path, pipeline) as lynx:
        wait_for(lambda: job_records(tmp_path), timeout=60)
        [job_id] = wait_for(lambda: jobs_of(pipeline), timeout=30)
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        output, _ = lynx.communicate(timeout=90)
    assert lynx.returncode == 0, output
    assert f"Step 1 (train.py): SLURM job {job_id} was cancelled outside Lynx" in output
    assert "Retrying Step 1 (train.py)" in output
    first, second = job_records(tmp_path)
    assert first["SLURM_JOB_ID"] == job_id != second["SLURM_JOB_ID"]


def test_mixed_pipeline_runs_in_order(tmp_path: Path, pipeline: str) -> None:
    for name in ("prepare.py", "train.py", "report.py"):
        job_script(tmp_path, name)
    write_config(
        tmp_path,
        """
        steps:
          - script: prepare.py
          - script: train.py
            slurm: {cpus-per-task: 2}
          - script: report.py
        """,
        name=f"{pipeline}.yaml",
    )
    result = run_lynx("start", "-ni", "-cf", f"{pipeline}.yaml", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    records = job_records(tmp_path)
    assert [record["SLURM_JOB_ID"] is not None for record in records] == [False, True, False]
    steps = re.findall(r"Processing Step (\d): (\S+)\.\.\.", result.stdout)
    assert steps == [("1", "prepare.py"), ("2", "train.py"), ("3", "report.py")]


def test_slurm_step_on_a_background_cron_schedule(lynx_dir: Path, pipeline: str) -> None:
    job_script(lynx_dir, "train.py")
    write_config(
        lynx_dir,
        """
        cron:
          second: "*/3"
        steps:
          - script: train.py
            slurm: {}
        """,
        name=f"{pipeline}.yaml",
    )
    started = run_lynx("start", "-bg", "-cf", f"{pipeline}.yaml", "-lf", "lynx.log", cwd=lynx_dir, env=clean_env())
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        wait_for(lambda: len(job_records(lynx_dir)) >= 3, timeout=90)
        # srun's helper, re-parented to Lynx (a subreaper), is reaped after each step: none piles up
        # (at a given moment the running step's srun and its helper may have just exited).
        scheduler = psutil.Process(json.loads((lynx_dir / ".lynx_pid.json").read_text())["pid"])
        zombies = [child for child in scheduler.children() if child.status() == psutil.STATUS_ZOMBIE]
        assert len(zombies) <= 2, zombies
    finally:
        stopped = run_lynx("stop", "-y", cwd=lynx_dir, env=clean_env(), timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    ids = [record["SLURM_JOB_ID"] for record in job_records(lynx_dir)]
    assert len(set(ids)) == len(ids) >= 3
    assert None not in ids


def test_validate_shows_the_srun_command_and_asks_slurm(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "train.py")
    write_config(
        tmp_path,
        "steps:\n  - script: train.py\n    slurm: {time: 5}\n  - script: train.py\n    slurm: {cpus-per-task: 2}\n",
        name=f"{pipeline}.yaml",
    )
    result = run_lynx("validate", "-cf", f"{pipeline}.yaml", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    shown = (
        f"  runs on SLURM: srun --job-name=lynx:{pipeline}:train.py --chdir={tmp_path} --export=ALL --input=none "
        f"--quiet --time=5 \\S*python\\S* {tmp_path / 'train.py'}\n"
    )
    assert re.search(shown, result.stdout)
    assert result.stdout.count("  SLURM would accept it: Job ") == 2
    assert job_records(tmp_path) == []


def test_sigterm_to_lynx_cancels_the_job(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "train.py", "time.sleep(600)")
    write_config(tmp_path, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    with running_lynx(tmp_path, pipeline) as lynx:
        wait_for(lambda: jobs_of(pipeline) and job_records(tmp_path), timeout=60)
        lynx.send_signal(signal.SIGTERM)
        output, _ = lynx.communicate(timeout=60)
    assert lynx.returncode == 143, output
    assert jobs_of(pipeline) == []


IGNORES_SIGTERM = """
import signal
signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
time.sleep(600)
"""


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_not_slurms_kill_wait(
    tmp_path: Path, pipeline: str
) -> None:
    """SIGKILL goes to the job's steps while it still runs: a cancelled job would wait for KillWait (30 s)."""
    job_script(tmp_path, "train.py", IGNORES_SIGTERM)
    write_config(tmp_path, "steps:\n  - script: train.py\n    timeout: 2\n    slurm: {}\n", name=f"{pipeline}.yaml")
    began = time.monotonic()
    result = run_lynx("start", "-ni", "-cf", f"{pipeline}.yaml", cwd=tmp_path, env=clean_env())
    took = time.monotonic() - began
    assert result.returncode == 1, result.stdout
    assert "ignoring SIGTERM" in result.stdout
    assert re.search(r"SLURM job \d+ still runs 5 s after SIGTERM: killing it \(SIGKILL\)\.", result.stdout)
    assert re.search(r"SLURM job \d+ has ended\.", result.stdout)
    assert took < 2 + 5 + 15, f"took {took:.1f} s"
    assert jobs_of(pipeline) == []


def kill_sruns(lynx: subprocess.Popen[str]) -> None:
    """srun and its helper, killed at once (the OOM killer, a user's kill): the job itself runs on."""
    for srun in [each for each in psutil.Process(lynx.pid).children(recursive=True) if each.name() == "srun"]:
        srun.kill()


def test_a_job_whose_srun_is_killed_is_cancelled(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "train.py", "time.sleep(600)")
    write_config(tmp_path, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    with running_lynx(tmp_path, pipeline) as lynx:
        wait_for(lambda: jobs_of(pipeline) and job_records(tmp_path), timeout=60)
        kill_sruns(lynx)
        output, _ = lynx.communicate(timeout=60)
    assert lynx.returncode == 1, output
    assert re.search(r"lost its srun \(exit code -9\): sending SIGTERM to SLURM job \d+", output), output
    # Once its task has ended, only the allocation is left: it is cancelled at once, not after the grace.
    assert "still runs 5 s after SIGTERM" not in output, output
    assert jobs_of(pipeline) == []


def test_ctrl_c_after_srun_died_still_cancels_its_job(tmp_path: Path, pipeline: str) -> None:
    job_script(tmp_path, "train.py", "time.sleep(600)")
    write_config(tmp_path, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    with running_lynx(tmp_path, pipeline) as lynx:
        wait_for(lambda: jobs_of(pipeline) and job_records(tmp_path), timeout=60)
        kill_sruns(lynx)
        time.sleep(1)  # while Lynx looks at how the job ended
        lynx.send_signal(signal.SIGINT)
        output, _ = lynx.communicate(timeout=60)
    assert lynx.returncode == 130, output
    assert jobs_of(pipeline) == []


def test_a_second_ctrl_c_while_a_timed_out_job_is_ended_on_a_schedule_leaves_no_job(
    tmp_path: Path, pipeline: str
) -> None:
    """The step's thread ends the timed-out job; the main thread's Ctrl+C waits for it, holding the second."""
    job_script(tmp_path, "train.py", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + IGNORES_SIGTERM)
    write_config(
        tmp_path,
        "cron: {hour: 0, minute: 0, run_on_start: true}\nsteps:\n  - script: train.py\n    timeout: 2\n    slurm: {}\n",
        name=f"{pipeline}.yaml",
    )
    with running_lynx(tmp_path, pipeline) as lynx:
        assert lynx.stdout is not None
        output = ""
        while "timed out after 2 s" not in output:
            line = lynx.stdout.readline()
            assert line, output
            output += line
        lynx.send_signal(signal.SIGINT)
        time.sleep(1)
        lynx.send_signal(signal.SIGINT)
        rest, _ = lynx.communicate(timeout=90)
        output += rest
    assert lynx.returncode == 130, output
    assert re.search(r"SLURM job \d+ has ended\.", output), output
    assert jobs_of(pipeline) == []


def test_a_second_ctrl_c_on_a_schedule_still_leaves_no_job(tmp_path: Path, pipeline: str) -> None:
    """On a schedule the main thread ends the job itself, deferring a second Ctrl+C until it has ended."""
    job_script(tmp_path, "train.py", CHECKPOINT_ON_CTRL_C)
    write_config(
        tmp_path, "cron: {second: '*/2'}\nsteps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml"
    )
    with running_lynx(tmp_path, pipeline) as lynx:
        wait_for(lambda: jobs_of(pipeline) and job_records(tmp_path), timeout=60)
        lynx.send_signal(signal.SIGINT)
        time.sleep(0.3)
        lynx.send_signal(signal.SIGINT)
        output, _ = lynx.communicate(timeout=60)
    assert lynx.returncode == 130, output
    assert "saving a checkpoint" in output
    assert re.search(r"SLURM job \d+ has ended\.", output), output
    assert jobs_of(pipeline) == []


def test_parallel_slurm_steps_are_concurrent_jobs_and_lynx_stop_cancels_all(lynx_dir: Path, pipeline: str) -> None:
    """Issue 18: a sweep of SLURM steps fills the queue side by side; 'lynx stop' cancels every job."""
    job_script(lynx_dir, "train.py", "time.sleep(600)")
    write_config(
        lynx_dir,
        "max_parallel: 4\nsteps:\n  - script: train.py\n    name: train\n    matrix: {seed: [1, 2]}\n"
        "    arguments: ['${matrix.seed}']\n    slurm: {}\n",
        name=f"{pipeline}.yaml",
    )
    started = run_lynx("start", "-bg", "-cf", f"{pipeline}.yaml", "-lf", "lynx.log", cwd=lynx_dir, env=clean_env())
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: len(job_records(lynx_dir)) == 2, timeout=90)
    # Both jobs run at once: each has written its record, and both are in the queue.
    assert len(jobs_of(pipeline)) == 2
    assert sorted(record["argv"][0] for record in job_records(lynx_dir)) == ["1", "2"]

    stopped = run_lynx("stop", "-y", cwd=lynx_dir, env=clean_env(), timeout=90)

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert jobs_of(pipeline) == []
    log = (lynx_dir / "lynx.log").read_text()
    assert len(re.findall(r"SLURM job \d+ has ended\.", log)) == 2


def test_a_job_is_cancelled_when_lynx_is_killed(lynx_dir: Path, pipeline: str) -> None:
    """Lynx SIGKILLed (the OOM killer): its watchdog ends the job as Lynx would have (SIGTERM first,
    so the job can save a checkpoint), then srun; the job's record is gone."""
    job_script(lynx_dir, "train.py", CHECKPOINT_ON_SIGTERM)
    write_config(lynx_dir, "steps:\n  - script: train.py\n    slurm: {}\n", name=f"{pipeline}.yaml")
    log = lynx_dir / "lynx.log"
    lynx = start_lynx_logging(lynx_dir, f"{pipeline}.yaml", log)
    try:
        job_id = job_id_in_log(log)
        sruns = [each for each in psutil.Process(lynx.pid).children(recursive=True) if each.name() == "srun"]
        assert sruns
        lynx.kill()
        lynx.wait()
        wait_for(lambda: job_id not in jobs_of(pipeline), timeout=30)
        wait_for(lambda: all(is_gone(each.pid, each.create_time()) for each in sruns), timeout=15)
        wait_for(lambda: f"SLURM job {job_id} has ended." in log.read_text(), timeout=15)
    finally:
        if lynx.poll() is None:
            lynx.kill()
            lynx.wait()
    assert (lynx_dir / "checkpoint").exists()
    text = log.read_text()
    died = f"Step 1 (train.py) outlived Lynx (PID {lynx.pid}), which has died"
    assert f"{died}: sending SIGTERM to SLURM job {job_id} (scancel)." in text
    assert list((lynx_dir / ".lynx" / "jobs").glob("*.json")) == []
