"""Shared helpers: run the real ``lynx`` command in a subprocess on small configs in tmp_path."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def lynx_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m lynx``."""
    script = Path(sys.executable).with_name("lynx")
    if script.exists():
        return [str(script)]
    found = shutil.which("lynx")
    return [found] if found else [sys.executable, "-m", "lynx"]


def clean_env(**extra: str) -> dict[str, str]:
    """A user's environment: no PYTHONUNBUFFERED/PYTHONDONTWRITEBYTECODE, no color, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")}
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def write_script(directory: Path, name: str, body: str) -> Path:
    """Write a step script (dedented) and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def write_config(directory: Path, text: str, name: str = "config.yaml") -> Path:
    """Write a YAML config (dedented) and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def marker_step(directory: Path, name: str, exit_code: int = 0, extra: str = "") -> Path:
    """A step that appends its name (and arguments) to ran.txt, runs ``extra``, and exits with ``exit_code``."""
    return write_script(
        directory,
        name,
        f"""
        import sys
        with open({str(directory / "ran.txt")!r}, "a", encoding="utf-8") as handle:
            handle.write(" ".join([{name!r}] + sys.argv[1:]) + "\\n")
        {extra}
        print("output of {name}")
        sys.exit({exit_code})
        """,
    )


def ran(directory: Path) -> list[str]:
    """Lines the marker steps wrote, in order."""
    path = directory / "ran.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def run_lynx(
    *args: str,
    cwd: Path,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``lynx args`` to its end (no terminal; stdin from ``input`` or /dev/null)."""
    return subprocess.run(
        [*lynx_command(), *args],
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        env=env or clean_env(),
        timeout=timeout,
    )


def wait_for(condition: Callable[[], object], timeout: float = 30, interval: float = 0.05) -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def kill_processes_in(directory: Path) -> None:
    """Kill whatever still runs with its working directory in ``directory``: only this test started those."""
    root = str(directory.resolve())
    leftovers = []
    for process in psutil.process_iter(["cwd"]):
        cwd = process.info.get("cwd")
        if cwd and (cwd == root or cwd.startswith(root + os.sep)) and process.pid != os.getpid():
            leftovers.append(process)
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(leftovers, timeout=5)


def is_gone(pid: int, create_time: float) -> bool:
    """The process that had ``pid`` at ``create_time`` has ended (a zombie counts as ended)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > 0.01:
            return True
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def lynx_dir(tmp_path: Path) -> Iterator[Path]:
    """A working directory whose background Lynx (if a test started one) is ended afterwards, even on failure."""
    yield tmp_path
    _kill_recorded_lynx(tmp_path)
    kill_processes_in(tmp_path)


def _kill_recorded_lynx(tmp_path: Path) -> None:
    """Kill the schedulers recorded in ``.lynx_pid.json`` and ``.lynx/schedulers/``, with their trees."""
    for record_file in [tmp_path / ".lynx_pid.json", *sorted((tmp_path / ".lynx" / "schedulers").glob("*.json"))]:
        try:
            # Tests plant FIFOs, devices and huge files as records: read only a small regular file.
            status = record_file.lstat()
            if not stat.S_ISREG(status.st_mode) or status.st_size > 1024 * 1024:
                continue
            record = json.loads(record_file.read_text())
            process = psutil.Process(int(record["pid"]))
            if process.cmdline() != record["cmdline"]:  # not the recorded process (tests fake create times)
                continue
            tree = [process, *process.children(recursive=True)]
        except (OSError, ValueError, KeyError, TypeError, RecursionError, psutil.Error):
            continue
        for each in tree:
            with contextlib.suppress(psutil.Error):
                each.kill()
        psutil.wait_procs(tree, timeout=10)
