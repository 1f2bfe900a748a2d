"""Surviving crashes and reboots (issue 15), end to end: missed runs caught up, lost runs recorded,
schedulers restored, the boot service written for this directory."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config


def history(directory: Path) -> list[dict[str, Any]]:
    result = run_lynx("history", "--json", "-n", "0", cwd=directory)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_schedule_until(directory: Path, config: str, count: int) -> str:
    """``lynx start -ni`` of ``config`` until ``count`` runs are in ran.txt, then Ctrl+C; its output."""
    lynx = subprocess.Popen(
        [*lynx_command(), "start", "-ni", "-cf", config], cwd=directory, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: len(ran(directory)) >= count, timeout=60)
        lynx.send_signal(signal.SIGINT)
        output, _ = lynx.communicate(timeout=60)
    finally:
        if lynx.poll() is None:
            lynx.kill()
            lynx.communicate()
    return output


CATCHUP = """
    cron:
      second: '*/3'
      catchup: {catchup}
    steps:
      - script: step.py
    """


@pytest.mark.parametrize("catchup", ["true", "60"])
def test_a_fire_missed_while_lynx_was_down_runs_once_at_start(tmp_path: Path, catchup: str) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, CATCHUP.format(catchup=catchup))
    run_schedule_until(tmp_path, "config.yaml", 1)
    last = datetime.fromisoformat(history(tmp_path)[0]["started_at"])
    # Down across at least one fire ('*/3'), then up again.
    wait_for(lambda: (datetime.now(last.tzinfo) - last).total_seconds() > 6.5, timeout=20)
    started = time.monotonic()

    output = run_schedule_until(tmp_path, "config.yaml", 2)

    assert "Catching up the run missed at " in output
    assert "Lynx is scheduled: first run now (catching up), then at " in output
    # The catch-up run came at once, not at the next fire.
    second = datetime.fromisoformat(history(tmp_path)[0]["started_at"])
    assert (second - last).total_seconds() > 6
    assert time.monotonic() - started < 30


def test_without_catchup_or_with_a_fire_older_than_it_nothing_is_caught_up(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, CATCHUP.format(catchup="1"))
    run_schedule_until(tmp_path, "config.yaml", 1)
    last = datetime.fromisoformat(history(tmp_path)[0]["started_at"])
    # Fires were missed, the newest of them 1.4-2 s ago ('*/3' fires when the seconds divide by 3): too
    # old for 'catchup: 1' when Lynx looks, a few tenths of a second later, and before the next fire.
    wait_for(
        lambda: (datetime.now(last.tzinfo) - last).total_seconds() > 7 and 1.4 < time.time() % 3 < 2.0,
        timeout=20,
        interval=0.01,
    )

    output = run_schedule_until(tmp_path, "config.yaml", 2)

    assert "Catching up" not in output
    assert "Lynx is scheduled: first run at " in output


def test_a_bad_catchup_is_refused(tmp_path: Path) -> None:
    marker_step(tmp_path, "step.py")
    write_config(tmp_path, CATCHUP.format(catchup="soon"))

    result = run_lynx("start", "-ni", "-cf", "config.yaml", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith("Error: config.yaml: cron: 'catchup' must be true, false or a number of seconds")
