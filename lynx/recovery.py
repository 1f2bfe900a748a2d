"""Runs that Lynx could not finish recording: a journal per run in progress, and the ``lost`` runs it leaves.

While a run goes on, :class:`RunJournal` (a run reporter) keeps ``.lynx/running/<run id>.jsonl``: a
line when the run starts (what its history record will say, and whose process runs it), one when each
step starts and ends, each a single ``O_APPEND`` write; a heartbeat touches the file now and then. When
the run ends the history gets its line and the journal goes. A journal whose process is gone (SIGKILL,
the OOM killer, a power loss) is a lost run: the next ``lynx history``, ``lynx status`` or
``lynx start`` here (:func:`recover_lost_runs`) appends it to the history with ``result: "lost"``,
the step that was running, and when Lynx was last known alive, then removes the journal. No process
has to watch.
"""

from __future__ import annotations

import contextlib
import os
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from lynx.children import boot_id, process_start
from lynx.history import append_line, history_path, max_bytes, read_runs, step_record, to_json
from lynx.statefiles import STATE_DIR, check_owner, open_regular

RUNNING_DIR = "running"
# How often a run in progress says it is alive (the journal's modification time).
HEARTBEAT = 30.0
# A journal larger than this is not read whole (a step retried thousands of times writes more).
MAX_JOURNAL = 4 * 1024 * 1024


def journal_dir(directory: str) -> str:
    return os.path.join(directory, STATE_DIR, RUNNING_DIR)


class RunJournal:
    """A run reporter that keeps the journal of the run in progress (see the module's docstring).

    Args:
        directory: where ``.lynx/`` is (``"."``: follows a renamed project folder).
        head: the start of the run's history record, for a run id and start time.
        warn: told once when the journal cannot be written; the run goes on without it.
    """

    def __init__(
        self, directory: str, head: Callable[[str, datetime], dict[str, Any]], warn: Callable[[str], None]
    ) -> None:
        self.directory = directory
        self.folder = journal_dir(directory)
        self.head = head
        self.warn = warn
        self.warned = False
        self.path: str | None = None
        self.lock = threading.Lock()
        self.beating: threading.Event | None = None

    def run_started(self, run_id: str, started_at: datetime) -> None:
        try:
            check_owner(self.directory)
        except OSError:
            return  # a .lynx/ that is not ours is never written (the history says so, once)
        self.path = os.path.join(self.folder, f"{run_id}.jsonl")
        owner = {"pid": os.getpid(), "start": process_start(os.getpid()), "boot_id": boot_id()}
        if self._append({"run": self.head(run_id, started_at), "owner": owner}, create=True):
            self.beating = threading.Event()
            beat = threading.Thread(target=self._beat, args=(self.path, self.beating), name="lynx-alive", daemon=True)
            try:
                beat.start()
            except RuntimeError:  # at the process limit (RLIMIT_NPROC): the run goes on without heartbeats
                self.beating = None

    def step_started(self, step: Any, attempt: int) -> None:
        self._append(
            {
                "started": {
                    "number": step.number,
                    "script": step.script,
                    "name": step.name,
                    "matrix": dict(step.matrix) or None,
                    "attempts": attempt,
                    "started_at": _now(),
                }
            }
        )

    def step_finished(self, record: Any) -> None:
        self._append({"finished": step_record(record)})

    def run_finished(self, result: Any) -> None:
        if self.beating is not None:
            self.beating.set()
        # The history has its line (reporters are told in order, the history first): the journal goes.
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.path = self.beating = None

    def _append(self, entry: dict[str, Any], create: bool = False) -> bool:
        path = self.path
        if path is None:
            return False
        line = (to_json(entry) + "\n").encode()
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
        try:
            with self.lock:
                try:
                    fd = open_regular(path, flags)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.makedirs(self.folder, exist_ok=True)
                    fd = open_regular(path, flags)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
            return True
        except OSError as error:
            if not self.warned:
                self.warned = True
                self.warn(
                    f"Cannot keep the journal of the run in progress ({error.strerror or error}); "
                    "should Lynx be killed, this run will not show as lost in the history."
                )
            return False

    @staticmethod
    def _beat(path: str, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT):
            with contextlib.suppress(OSError):
                os.utime(path)


def recover_lost_runs(directory: str, *, environ: Mapping[str, str] = os.environ) -> list[dict[str, Any]]:
    """Record the runs whose process is gone as ``lost`` in the history of ``directory``, once each.

    Returns:
        The records it appended.
    """
    folder = journal_dir(directory)
    try:
        names = [name for name in os.listdir(folder) if name.endswith(".jsonl") and not name.startswith(".")]
    except OSError:
        return []  # none, or nothing Lynx may read (the readers say so themselves)
    try:
        check_owner(directory)
    except OSError:
        return []
    recovered = []
    rotate_at = max_bytes(environ)
    for name in sorted(names):
        path = os.path.join(folder, name)
        journal = _read(path)
        if journal is None or _alive(journal.get("owner")):
            continue
        # One reader wins the rename; a second one finds nothing to claim.
        claimed = os.path.join(folder, f".{name}.{os.getpid()}.claimed")
        try:
            os.rename(path, claimed)
        except OSError:
            continue
        try:
            record = lost_record(journal, last_alive=_mtime(claimed))
            run_id = record.get("run_id")
            if isinstance(run_id, str) and not read_runs(directory, limit=1, run_id=run_id):
                line = (to_json(record) + "\n").encode()
                append_line(history_path(directory), line, rotate_at)
                recovered.append(record)
        except OSError:
            with contextlib.suppress(OSError):
                os.rename(claimed, path)  # another time, then
            continue
        with contextlib.suppress(OSError):
            os.unlink(claimed)
    return recovered


def lost_record(journal: dict[str, Any], *, last_alive: float | None) -> dict[str, Any]:
    """The history record of a run its journal describes, ended by Lynx's death."""
    head = dict(journal["run"])
    steps: dict[str, dict[str, Any]] = {}
    latest = None
    for kind, step in journal["steps"]:
        key = f"{step.get('number')}:{step.get('matrix')}"
        if kind == "started":
            earlier = steps.get(key)
            steps[key] = {
                "number": step.get("number"),
                "script": step.get("script"),
                "name": step.get("name"),
                "argv": (earlier or {}).get("argv", []),
                "attempts": step.get("attempts"),
                "returncode": None,
                "duration_s": (earlier or {}).get("duration_s", 0.0),
                "result": "lost",
                "started_at": (earlier or {}).get("started_at") or step.get("started_at"),
                **({"matrix": step["matrix"]} if step.get("matrix") else {}),
            }
            latest = step.get("started_at")
        else:
            steps[key] = step
    alive = _iso(last_alive) if last_alive is not None else latest
    started = _parse(head.get("started_at"))
    ended = _parse(alive)
    lost = [step for step in steps.values() if step.get("result") == "lost"]
    for step in lost:
        # At least from its start to when Lynx was last known alive.
        began = _parse(step.get("started_at"))
        if began is not None and ended is not None:
            step["duration_s"] = round(step["duration_s"] + max((ended - began).total_seconds(), 0.0), 3)
    return {
        **head,
        "ended_at": None,
        "duration_s": round((ended - started).total_seconds(), 3) if started and ended else 0.0,
        "result": "lost",
        "failed_step": lost[0]["number"] if lost else None,
        "last_alive_at": alive,
        "steps": sorted(steps.values(), key=lambda step: step.get("number") or 0),
    }


def _read(path: str) -> dict[str, Any] | None:
    """A journal: its first line (``run``, ``owner``) and its step lines, or None if it is not one."""
    from lynx.schema import parse_json

    try:
        fd = open_regular(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            data = os.read(fd, MAX_JOURNAL)
        finally:
            os.close(fd)
    except OSError:
        return None
    journal: dict[str, Any] = {"steps": []}
    for number, line in enumerate(data.split(b"\n")):
        try:
            entry = parse_json(line)
        except ValueError:
            continue  # the unfinished line of a killed Lynx
        if not isinstance(entry, dict):
            continue
        if number == 0 and isinstance(entry.get("run"), dict):
            journal.update(run=entry["run"], owner=entry.get("owner"))
        for kind in ("started", "finished"):
            if isinstance(entry.get(kind), dict):
                journal["steps"].append((kind, entry[kind]))
    return journal if "run" in journal else None


def _alive(owner: Any) -> bool:
    """The journal's process still runs: its PID, with the start time and boot it recorded."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return False
    if owner.get("boot_id") != boot_id():
        return False  # a reboot ended it
    start = process_start(owner["pid"])
    return start is not None and start == owner.get("start") and _running(owner["pid"])


def _running(pid: int) -> bool:
    """The process is there and not a zombie (Lynx killed, its parent not yet done with it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return False


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).astimezone().isoformat(timespec="milliseconds")


def _parse(stamp: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
    except ValueError:
        return None
