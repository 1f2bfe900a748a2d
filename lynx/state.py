"""The ``.lynx/`` state folder: one JSON entry per named background scheduler, replaced atomically.

The launcher writes a scheduler's entry before the scheduler may run; from then on only the
scheduler itself rewrites it (through :class:`EntryReporter`), and ``lynx stop`` replaces it by a
tombstone in ``.lynx/stopped/`` (what ``lynx logs NAME`` still needs, and the sign that it was
stopped on purpose). Readers take no lock: every write is a whole new file moved into place with
``os.replace``; what they read is checked field by field (:mod:`lynx.schema`).

An entry knows the directory it belongs to (path, device, inode): a copy of the project folder
holds copies of the entries, which describe the original's schedulers, not its own; a renamed
folder keeps its device and inode, and the paths an entry names inside it are read as moved.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from lynx import schema, statefiles
from lynx.errors import ConfigError, LynxError
from lynx.statefiles import STATE_DIR, StateFileError

SCHEDULERS_DIR = "schedulers"
STOPPED_DIR = "stopped"
# Short words that are safe file names everywhere: no leading '.' (hidden files, '..') or '-' (options).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "ASCII letters, digits, '-', '_' and '.', at most 64, not starting with '.' or '-'"


def check_name(name: str, *, what: str = "scheduler name", hint: str = "") -> str:
    """``name`` if it is a valid scheduler name.

    Args:
        hint: said after the rule (how else to name it).

    Raises:
        ConfigError: it is not (a usage error).
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{what} {name!r} is not valid: use {NAME_RULE}{hint}")
    return name


def schedulers_dir(directory: Path) -> Path:
    return directory / STATE_DIR / SCHEDULERS_DIR


def entry_path(directory: Path, name: str) -> Path:
    return schedulers_dir(directory) / f"{name}.json"


def tombstone_path(directory: Path, name: str) -> Path:
    return directory / STATE_DIR / STOPPED_DIR / f"{name}.json"


def check_trusted(directory: Path) -> None:
    """Refuse to read or write the ``.lynx/`` of ``directory`` if someone else controls it.

    Raises:
        LynxError: it belongs to another user (exit 1).
    """
    try:
        statefiles.check_owner(directory)
    except StateFileError as error:
        raise LynxError(f"{error.strerror} (work from a folder of your own)") from None


def identity(directory: Path) -> dict[str, Any]:
    """What tells ``directory`` from a copy of it, and stays when it is renamed."""
    status = os.stat(directory)
    return {"path": os.path.abspath(directory), "device": status.st_dev, "inode": status.st_ino}


@dataclass(frozen=True)
class SchedulerEntry:
    """What is known about one background scheduler: who it is, what it runs, how its runs go."""

    name: str
    pid: int
    cmdline: tuple[str, ...]
    # Kept for the original Lynx's '.lynx_pid.json' (process name, executable, status at start).
    process_name: str = ""
    exe: str = ""
    status: str = ""
    username: str = ""
    # psutil's create time (moves when the clock is stepped) and what does not move:
    # the kernel's start time in clock ticks since boot, and the boot it counts from.
    create_time: float | None = None
    start_ticks: int | None = None
    boot_id: str | None = None
    config_file: str | None = None
    log_file: str | None = None
    started_at: str | None = None
    schedule: str | None = None
    next_run: str | None = None
    # The run going on now (its id, start time, step and the step's start); all None between runs.
    run_started_at: str | None = None
    current_step: int | None = None
    last_run: dict[str, Any] | None = None
    run_id: str | None = None
    step_started_at: str | None = None
    # When the scheduler last wrote the entry.
    updated_at: str | None = None
    # The directory it was started from: path, device and inode (see identity()).
    directory: dict[str, Any] | None = None
    # The user-level options it was started with (config_file, name, log_file, log_level, log_size,
    # log_backup_count, keep_running; paths relative to the directory when inside it), and the
    # command line as the user typed it.
    options: dict[str, Any] | None = None
    command_line: tuple[str, ...] | None = None
    # How it ended by itself (at, reason, exit_code, error); None while it runs, or if it was killed.
    ended: dict[str, Any] | None = None
    # Set in a tombstone: when 'lynx stop' removed it.
    stopped_at: str | None = None
    # Where it was read from; not part of the file.
    path: Path | None = None
    # Not part of the file: the path of the directory it belongs to, when that is not the one it was read in.
    elsewhere: str | None = None

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies, a third of the cost of each update.
        data = {name: getattr(self, name) for name in _ENTRY_KEYS}
        data["cmdline"] = list(self.cmdline)
        if self.command_line is not None:
            data["command_line"] = list(self.command_line)
        return data


_ENTRY_KEYS = tuple(each.name for each in fields(SchedulerEntry) if each.name not in ("path", "elsewhere"))


def write_json_atomically(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace ``path`` by a new file (temp file + ``os.replace``) with the modes the umask gives.

    Args:
        durable: fsync before the replace; updates that the next one supersedes skip it.
    """
    text = json.dumps(data, indent=2 if durable else None) + "\n"
    statefiles.replace_atomically(path, text.encode("utf-8"), durable=durable)


def check_writable(directory: Path) -> None:
    """Create ``.lynx/schedulers/`` and prove a file can be written there and beside it.

    Raises:
        LynxError: it cannot (a read-only or special directory such as /proc).
    """
    import tempfile

    check_trusted(directory)
    folder = schedulers_dir(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for place in (folder, directory):
            fd, temp = tempfile.mkstemp(prefix=".lynx-check.", dir=place)
            os.close(fd)
            os.unlink(temp)
    except OSError as error:
        raise LynxError(
            f"cannot record a background Lynx in {directory}: {error.strerror or error}; nothing was started"
        ) from None


def write_entry(entry: SchedulerEntry, directory: Path, *, durable: bool = True) -> Path:
    path = entry_path(directory, entry.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, entry.to_json(), durable=durable)
    return path


def read_entry(path: Path) -> SchedulerEntry:
    """The entry in ``path`` (a regular file of at most a MiB, read without following a link).

    Raises:
        LynxError: it is unreadable or not an entry; FileNotFoundError if it is gone.
    """
    try:
        data = schema.parse_json(statefiles.read_bounded(path))
    except (OSError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        reason = error.strerror if isinstance(error, StateFileError) else error
        raise LynxError(f"{path}: cannot read it ({reason}); {_left_alone(path)}") from None
    problem = schema.entry_problem(data)
    if problem is None and data["name"] != path.stem:
        problem = f"its name is not {path.stem!r}"
    if problem is not None:
        raise LynxError(f"{path} is not a Lynx scheduler entry ({problem}); {_left_alone(path)}")
    values = {key: value for key, value in data.items() if key in _KNOWN}
    for key in ("cmdline", "command_line"):
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    return SchedulerEntry(**values, path=path)


_KNOWN = frozenset(_ENTRY_KEYS)


def _left_alone(path: Path) -> str:
    return f"it is left alone; remove it if no background Lynx named '{path.stem}' runs here"


def read_entries(directory: Path, *, on_error: Callable[[str], None] | None = None) -> list[SchedulerEntry]:
    """Every registered scheduler, by name; one copied from another directory has ``elsewhere`` set.

    Args:
        on_error: told about an unreadable entry, which is then left out; None: it raises LynxError.

    Raises:
        LynxError: ``.lynx/`` belongs to someone else.
    """
    check_trusted(directory)
    folder = schedulers_dir(directory)
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".json") and not name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    here = None
    entries = []
    for name in names:
        try:
            entry = read_entry(folder / name)
        except FileNotFoundError:  # removed by a stop meanwhile
            continue
        except LynxError as error:
            if on_error is None:
                raise
            on_error(error.message)
            continue
        if entry.directory is not None:
            here = here or identity(directory)
            entry = placed(entry, here)
        entries.append(entry)
    return entries


def placed(entry: SchedulerEntry, here: dict[str, Any]) -> SchedulerEntry:
    """``entry`` as read in the directory ``here`` (see identity()): from elsewhere, or moved here."""
    recorded = entry.directory or {}
    if (recorded.get("device"), recorded.get("inode")) != (here["device"], here["inode"]):
        return replace(entry, elsewhere=recorded.get("path") or "?")
    old, new = recorded.get("path"), here["path"]
    if not old or old == new:
        return entry

    def moved(path: str | None) -> str | None:
        # The folder was renamed since it started: what it named inside the folder moved with it.
        if path is not None and path.startswith(old.rstrip(os.sep) + os.sep):
            return new.rstrip(os.sep) + path[len(old.rstrip(os.sep)) :]
        return path

    return replace(entry, config_file=moved(entry.config_file), log_file=moved(entry.log_file))


def remove_entry(entry: SchedulerEntry) -> None:
    if entry.path is not None:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()


def write_tombstone(entry: SchedulerEntry, directory: Path) -> None:
    """Keep what is known of a scheduler ``lynx stop`` removed, marked as stopped on purpose."""
    stopped = replace(entry, stopped_at=iso(datetime.now()))
    path = tombstone_path(directory, entry.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, stopped.to_json())


def read_tombstone(directory: Path, name: str) -> SchedulerEntry | None:
    """The tombstone of scheduler ``name`` (moved paths read as moved), or None.

    Raises:
        LynxError: it cannot be read, or ``.lynx/`` belongs to someone else.
    """
    check_trusted(directory)
    try:
        entry = read_entry(tombstone_path(directory, name))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return placed(entry, identity(directory)) if entry.directory is not None else entry


def stopped_names(directory: Path) -> list[str]:
    """The names of the schedulers stopped here that left a tombstone."""
    try:
        names = os.listdir(directory / STATE_DIR / STOPPED_DIR)
    except OSError:
        return []
    return sorted(name[:-5] for name in names if name.endswith(".json") and NAME_PATTERN.fullmatch(name[:-5]))


def remove_tombstone(directory: Path, name: str) -> None:
    """A scheduler of that name starts again: it is no longer stopped."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        tombstone_path(directory, name).unlink()


# How a scheduler ended by itself (its entry's 'ended.reason'), in words.
ENDINGS = {
    "done": "run done",
    "run_failed": "run failed",
    "schedule_ended": "no more fire times",
    "error": "error",
}


def restorable(entry: SchedulerEntry) -> bool:
    """Once its process is gone, ``lynx restore`` brings it back: it did not end by itself, and its record
    says how it was started (a stopped one leaves no record, only a tombstone)."""
    return entry.ended is None and entry.stopped_at is None and bool(entry.options)


def describe_ending(ended: dict[str, Any]) -> str:
    """Why a scheduler ended by itself, in words (an error with its ``Error:`` text)."""
    reason = str(ended.get("reason"))
    error = ended.get("error")
    return f"{ENDINGS.get(reason, reason)}: {error}" if reason == "error" and error else ENDINGS.get(reason, reason)


def iso(when: datetime | None) -> str | None:
    """ISO 8601 with the offset, to the second."""
    return when.astimezone().isoformat(timespec="seconds") if when is not None else None


class EntryReporter:
    """A run reporter for a background scheduler: keeps its entry current for ``lynx status``.

    Each event rewrites the whole entry (no fsync: the next event supersedes it). A failure to
    write is reported through ``warn`` once per spell of failures (and its end is said), and never
    stops the schedule.
    """

    def __init__(
        self,
        entry: SchedulerEntry,
        directory: Path,
        *,
        warn: Callable[[str], None],
        next_fire: Callable[[datetime], datetime | None] | None = None,
    ) -> None:
        """
        Args:
            directory: where ``.lynx/`` is; ``Path(".")`` follows the working directory when the
                project folder is renamed.
            next_fire: the schedule's next fire time after a given time: during a run the
                scheduler has not said it yet, and the run's own fire time has passed.
        """
        self.entry = entry
        self.directory = directory
        self.warn = warn
        self.next_fire = next_fire
        self.failing = False
        self.lock = threading.Lock()

    def _update(self, durable: bool = False, **changes: Any) -> None:
        with self.lock:
            self.entry = replace(self.entry, updated_at=iso(datetime.now()), **changes)
            try:
                write_entry(self.entry, self.directory, durable=durable)
            except OSError as error:
                if not self.failing:
                    self.failing = True
                    self.warn(
                        f"Cannot update {entry_path(self.directory, self.entry.name)} ({error}); "
                        "'lynx status' shows an older state until it can"
                    )
            else:
                if self.failing:
                    self.failing = False
                    self.warn(f"{entry_path(self.directory, self.entry.name)} is up to date again.")

    def run_started(self, run_id: str, started_at: datetime) -> None:
        changes: dict[str, Any] = {
            "run_id": run_id,
            "run_started_at": iso(started_at),
            "current_step": None,
            "step_started_at": None,
        }
        if self.next_fire is not None:
            # A microsecond on, so that a run that began exactly on its fire time does not name it again.
            changes["next_run"] = iso(self.next_fire(started_at + timedelta(microseconds=1)))
        self._update(**changes)

    def step_started(self, step: Any, attempt: int) -> None:
        self._update(current_step=step.number, step_started_at=iso(datetime.now()))

    def step_finished(self, record: Any) -> None:
        """Nothing to show between a step's end and the next step's start."""

    def run_finished(self, result: Any) -> None:
        last_run = {
            "run_id": result.run_id,
            "started_at": iso(result.started_at),
            "ended_at": iso(result.ended_at),
            "duration_s": round(result.duration_s, 3),
            "result": result.result,
            "failed_step": result.failed_step,
        }
        self._update(run_id=None, run_started_at=None, current_step=None, step_started_at=None, last_run=last_run)

    def next_run(self, when: datetime | None) -> None:
        self._update(next_run=iso(when))

    def ended(self, reason: str, exit_code: int, error: str | None = None) -> None:
        """It ends by itself: say why in its entry, durably (it is the last word)."""
        ended = {"at": iso(datetime.now()), "reason": reason, "exit_code": exit_code, "error": error}
        self._update(durable=True, ended=ended, next_run=None)
