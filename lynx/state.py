"""The ``.lynx/`` state folder: one JSON entry per named background scheduler, replaced atomically.

The launcher writes a scheduler's entry before the scheduler may run; from then on only the
scheduler itself rewrites it (through :class:`EntryReporter`), and ``lynx stop`` removes it.
Readers take no lock: every write is a whole new file moved into place with ``os.replace``.
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

from lynx.errors import ConfigError, LynxError
from lynx.history import STATE_DIR

SCHEDULERS_DIR = "schedulers"
# Short words that are safe file names everywhere: no leading '.' (hidden files, '..') or '-' (options).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "letters, digits, '-', '_' and '.', at most 64, not starting with '.' or '-'"


def check_name(name: str, *, what: str = "scheduler name") -> str:
    """``name`` if it is a valid scheduler name.

    Raises:
        ConfigError: it is not (a usage error).
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{what} {name!r} is not valid: use {NAME_RULE}")
    return name


def schedulers_dir(directory: Path) -> Path:
    return directory / STATE_DIR / SCHEDULERS_DIR


def entry_path(directory: Path, name: str) -> Path:
    return schedulers_dir(directory) / f"{name}.json"


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
    # The run going on now (its start time) and its step; both None between runs.
    run_started_at: str | None = None
    current_step: int | None = None
    last_run: dict[str, Any] | None = None
    # Where it was read from; not part of the file.
    path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies, a third of the cost of each update.
        data = {name: getattr(self, name) for name in _ENTRY_KEYS}
        data["cmdline"] = list(self.cmdline)
        return data


_ENTRY_KEYS = tuple(each.name for each in fields(SchedulerEntry) if each.name != "path")


def write_json_atomically(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace ``path`` by a new file (temp file + ``os.replace``), readable by all, writable by the owner.

    Args:
        durable: fsync before the replace; updates that the next one supersedes skip it.
    """
    # Named after this process and thread: no other writer can share it, and no random name is needed.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    text = json.dumps(data, indent=2 if durable else None) + "\n"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            data = memoryview(text.encode("utf-8"))
            while data:  # a short write (a full disk) must not be moved into place as the record
                written = os.write(fd, data)
                if not written:
                    raise OSError(28, "no space left on the device")
                data = data[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def check_writable(directory: Path) -> None:
    """Create ``.lynx/schedulers/`` and prove a file can be written there and beside it.

    Raises:
        LynxError: it cannot (a read-only or special directory such as /proc).
    """
    import tempfile

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
    """The entry in ``path``.

    Raises:
        LynxError: it is unreadable or not an entry; FileNotFoundError if it is gone.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise LynxError(f"{path}: cannot read it ({error}); {_left_alone(path)}") from None
    known = set(_ENTRY_KEYS)
    try:
        if not isinstance(data, dict):
            raise TypeError("not an object")
        values = {key: value for key, value in data.items() if key in known}
        entry = SchedulerEntry(**values)
        if not isinstance(entry.pid, int) or isinstance(entry.pid, bool) or entry.pid <= 0:
            raise TypeError("'pid' is not a positive number")
        if not isinstance(entry.cmdline, list) or not all(isinstance(word, str) for word in entry.cmdline):
            raise TypeError("'cmdline' is not a list of strings")
        if entry.name != path.stem:
            raise TypeError(f"its name is not {path.stem!r}")
    except TypeError as error:
        raise LynxError(f"{path} is not a Lynx scheduler entry ({error}); {_left_alone(path)}") from None
    return replace(entry, cmdline=tuple(entry.cmdline), path=path)


def _left_alone(path: Path) -> str:
    return f"it is left alone; remove it if no background Lynx named '{path.stem}' runs here"


def read_entries(directory: Path, *, on_error: Callable[[str], None] | None = None) -> list[SchedulerEntry]:
    """Every registered scheduler, by name.

    Args:
        on_error: told about an unreadable entry, which is then left out; None: it raises LynxError.
    """
    folder = schedulers_dir(directory)
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".json") and not name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries = []
    for name in names:
        try:
            entries.append(read_entry(folder / name))
        except FileNotFoundError:  # removed by a stop meanwhile
            pass
        except LynxError as error:
            if on_error is None:
                raise
            on_error(error.message)
    return entries


def remove_entry(entry: SchedulerEntry) -> None:
    if entry.path is not None:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()


def iso(when: datetime | None) -> str | None:
    """ISO 8601 with the offset, to the second."""
    return when.astimezone().isoformat(timespec="seconds") if when is not None else None


class EntryReporter:
    """A run reporter for a background scheduler: keeps its entry current for ``lynx status``.

    Each event rewrites the whole entry (no fsync: the next event supersedes it). A failure to
    write is reported once through ``warn`` and never stops the schedule.
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
            next_fire: the schedule's next fire time after a given time: during a run the
                scheduler has not said it yet, and the run's own fire time has passed.
        """
        self.entry = entry
        self.directory = directory
        self.warn = warn
        self.next_fire = next_fire
        self.warned = False
        self.lock = threading.Lock()

    def _update(self, **changes: Any) -> None:
        with self.lock:
            self.entry = replace(self.entry, **changes)
            try:
                write_entry(self.entry, self.directory, durable=False)
            except OSError as error:
                if not self.warned:
                    self.warned = True
                    self.warn(f"Cannot update {entry_path(self.directory, self.entry.name)}: {error}")

    def run_started(self, run_id: str, started_at: datetime) -> None:
        changes: dict[str, Any] = {"run_started_at": iso(started_at), "current_step": None}
        if self.next_fire is not None:
            # A microsecond on, so that a run that began exactly on its fire time does not name it again.
            changes["next_run"] = iso(self.next_fire(started_at + timedelta(microseconds=1)))
        self._update(**changes)

    def step_started(self, step: Any, attempt: int) -> None:
        self._update(current_step=step.number)

    def step_finished(self, record: Any) -> None:
        """Nothing to show between a step's end and the next step's start."""

    def run_finished(self, result: Any) -> None:
        last_run = {
            "started_at": iso(result.started_at),
            "ended_at": iso(result.ended_at),
            "duration_s": round(result.duration_s, 3),
            "result": result.result,
            "failed_step": result.failed_step,
        }
        self._update(run_started_at=None, current_step=None, last_run=last_run)

    def next_run(self, when: datetime | None) -> None:
        self._update(next_run=iso(when))
