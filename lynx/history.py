"""The run history: one JSON line per run in ``.lynx/runs.jsonl``, appended as each run ends.

Each line is written with one ``write`` on a file opened with ``O_APPEND``, so concurrent
schedulers never interleave and a killed Lynx leaves at most its own line unfinished; readers
skip lines that do not parse. Past ``max_bytes`` the file is renamed to ``runs.jsonl.1`` (the
previous one is dropped), so the history takes at most twice that on disk.

Reading starts at the end of the file and goes backwards a block at a time: the newest runs
come first and cost the same whatever the file's length. A line that parses but is no run
(a wrong type, a NaN, a nest a thousand deep) is skipped like one that does not parse.

The files are opened as :mod:`lynx.statefiles` says: never through a link, only regular files,
with the umask's modes, and not at all in a ``.lynx/`` someone else controls.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from lynx.records import shown_words
from lynx.statefiles import STATE_DIR, check_owner, open_regular

if TYPE_CHECKING:
    from datetime import datetime

    from lynx.outcome import RunResult, StepRecord
    from lynx.records import Step

HISTORY_FILE = "runs.jsonl"
# The records of SLURM jobs (lynx.jobs): here so that start, status and stop can see there are none
# without importing that module.
JOBS_DIR = os.path.join(STATE_DIR, "jobs")
MAX_BYTES = 8 * 1024 * 1024
MAX_BYTES_VARIABLE = "LYNX_HISTORY_MAX_BYTES"
READ_BLOCK = 64 * 1024
# No run Lynx writes comes near this (a step's whole argv is at most a few MiB): longer is damage.
MAX_LINE = 4 * 1024 * 1024


def history_path(directory: str) -> str:
    return os.path.normpath(os.path.join(directory, STATE_DIR, HISTORY_FILE))


class HistoryRecorder:
    """A run reporter that appends each finished run to the history of ``directory``.

    Args:
        directory: where ``.lynx/`` is (the directory Lynx was started from); ``"."`` follows the
            working directory when the project folder is renamed while Lynx runs.
        config_file: the config the runs come from.
        name: the background scheduler's name, None in the foreground.
        max_bytes: the size past which the file is rotated.
        request: keys recorded with each run when the run was asked for with them (``selection``,
            ``overrides``, ``retry_of``).
    """

    def __init__(
        self,
        directory: str,
        config_file: str,
        name: str | None,
        max_bytes: int = MAX_BYTES,
        request: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = history_path(directory)
        # What the run was asked to be, beside its config (selection, overrides, retry_of): recorded when given.
        self.request = dict(request or {})
        self.config_file = os.path.abspath(config_file)
        self.name = name
        self.max_bytes = max_bytes
        self.config_sha256 = file_sha256(self.config_file)
        self.warned = False

    def run_started(self, run_id: str, started_at: datetime) -> None:
        pass

    def step_started(self, step: Step, attempt: int) -> None:
        pass

    def step_finished(self, record: StepRecord) -> None:
        pass

    def run_finished(self, result: RunResult) -> None:
        try:
            append_line(self.path, self.line(result), self.max_bytes)
        except OSError as error:
            self._warn(error)

    def line(self, result: RunResult) -> bytes:
        """The run as one JSON line."""
        return (to_json(self.record(result)) + "\n").encode()

    def head(self, run_id: str | None, started_at: datetime | None) -> dict[str, Any]:
        """What the run's record says from its start (lynx.recovery keeps it while the run goes on)."""
        from lynx import __version__

        return {
            "run_id": run_id,
            "name": self.name,
            "config_file": self.config_file,
            "config_sha256": self.config_sha256,
            "host": os.uname().nodename,
            "user": _user(),
            "python": sys.executable,
            "lynx_version": __version__,
            "started_at": _iso(started_at),
            **self.request,
        }

    def record(self, result: RunResult) -> dict[str, Any]:
        """The run's history record: what ``lynx history --json`` shows, and what notifications carry."""
        head = self.head(result.run_id, result.started_at)
        return {
            **{key: value for key, value in head.items() if key not in self.request},
            "ended_at": _iso(result.ended_at),
            "duration_s": round(result.duration_s, 3),
            "result": result.result,
            "failed_step": result.failed_step,
            **self.request,
            "steps": [step_record(step) for step in result.steps],
        }

    def _warn(self, error: OSError) -> None:
        if self.warned:
            return
        self.warned = True
        import logging

        reason = error.strerror or str(error)
        logging.getLogger("lynx").warning(
            f"Cannot write the run history to {self.path} ({reason}); the runs go on without it."
        )


def recorder_for(
    directory: str,
    config_file: str,
    name: str | None,
    environ: Mapping[str, str] = os.environ,
    request: Mapping[str, Any] | None = None,
) -> HistoryRecorder:
    """The history recorder of ``directory``, rotating at :func:`max_bytes`."""
    return HistoryRecorder(directory, config_file, name, max_bytes(environ), request)


def max_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """The size at which the history rotates: LYNX_HISTORY_MAX_BYTES (a number of bytes), else MAX_BYTES."""
    text = environ.get(MAX_BYTES_VARIABLE, "")
    return int(text) if text.isdigit() else MAX_BYTES


def append_line(path: str, line: bytes, max_bytes: int = MAX_BYTES) -> None:
    """Append ``line`` with one write, first rotating the file when the line would take it past ``max_bytes``.

    Raises:
        OSError: it cannot (a StateFileError, saying why, for a link, a FIFO or someone else's ``.lynx/``).
    """
    state = os.path.dirname(path)
    check_owner(os.path.dirname(state) or ".")
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
    try:
        fd = open_regular(path, flags)
    except FileNotFoundError:
        os.makedirs(state, exist_ok=True)
        fd = open_regular(path, flags)
    try:
        size = os.fstat(fd).st_size
        if max_bytes > 0 and size and size + len(line) > max_bytes:
            _rotate(path, fd, len(line), max_bytes)
            full, fd = fd, -1
            os.close(full)
            fd = open_regular(path, flags)
        elif size and os.pread(fd, 1, size - 1) != b"\n":
            # A line left unfinished (a full disk) must not swallow this one.
            line = b"\n" + line
        written = os.write(fd, line)
        if written < len(line):  # only a full disk does this: fail, so the user hears of it once
            raise OSError(28, "the line was only partly written (is the disk full?)")
    finally:
        if fd >= 0:
            os.close(fd)


def _rotate(path: str, fd: int, length: int, max_bytes: int) -> None:
    """Rename the full file ``fd`` to ``.1``, unless another scheduler did while this one waited.

    The lock on the file (released when ``fd`` is closed) lets one scheduler at a time decide.
    """
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)
    stat = os.fstat(fd)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return  # renamed by another scheduler, the new file not yet created
    if (current.st_dev, current.st_ino) == (stat.st_dev, stat.st_ino) and stat.st_size + length > max_bytes:
        os.replace(path, path + ".1")


def read_runs(
    directory: str,
    *,
    limit: int | None = None,
    name: str | None = None,
    accept: Callable[[dict[str, Any]], bool] | None = None,
    run_id: str | None = None,
) -> list[dict[str, Any]]:
    """The recorded runs, newest first; lines that are no run are skipped.

    Args:
        directory: where ``.lynx/`` is.
        limit: at most this many (None: all).
        name: only the runs of this scheduler, or foreground runs of a config file of this name.
        accept: only the runs it accepts (reading stops once ``limit`` of them are found).
        run_id: only the runs whose id starts with this (blocks of the file without it are passed over).

    Raises:
        OSError: the history cannot be read (a StateFileError for someone else's ``.lynx/``, a link, a FIFO).
    """
    from lynx.schema import parse_json, run_problem

    check_owner(directory)
    path = history_path(directory)
    needle = name.encode("utf-8") if name is not None and _plain(name) else None
    if run_id is not None and _plain(run_id):
        # As the history writes it (no spaces): the fastest test there is for a line that may be it.
        needle = f'"run_id":"{run_id}'.encode("ascii")
    runs: list[dict[str, Any]] = []
    for file in (path, path + ".1"):
        for line in _lines_backwards(file, needle):
            try:
                run = parse_json(line)
            except ValueError:
                continue  # the unfinished line of a killed Lynx, or a damaged one
            if run_problem(run) is not None or (name is not None and run_name(run) != name):
                continue
            if accept is not None and not accept(run):
                continue
            if run_id is not None and not str(run.get("run_id", "")).startswith(run_id):
                continue
            runs.append(run)
            if limit is not None and len(runs) >= limit:
                return runs
    return runs


def run_name(run: dict[str, Any]) -> str:
    """The scheduler's name; for a foreground run, its config file's name without the extension."""
    name = run.get("name")
    if isinstance(name, str):
        return name
    config = run.get("config_file")
    return os.path.splitext(os.path.basename(config))[0] if isinstance(config, str) else ""


def _lines_backwards(path: str, needle: bytes | None = None) -> Iterator[bytes]:
    """The file's non-empty lines (holding ``needle``, if given), last first, read a block at a time
    from the end; a block without the needle is passed over whole, and so is a line longer than
    MAX_LINE (held in memory no further)."""
    try:
        handle = os.fdopen(open_regular(path, os.O_RDONLY), "rb")
    except FileNotFoundError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        rest = b""
        overlong = False
        while position > 0:
            step = min(READ_BLOCK, position)
            position -= step
            handle.seek(position)
            block = handle.read(step)
            if overlong:
                # Within a line too long to be a run: passed over up to the newline before it.
                cut = block.rfind(b"\n")
                if cut < 0:
                    continue
                overlong, block = False, block[: cut + 1]
            block += rest
            if needle is not None and needle not in block:
                # The lines after the first are all in it: none of them holds the needle.
                cut = block.find(b"\n")
                rest = block if cut < 0 else block[:cut]
            else:
                lines = block.split(b"\n")
                rest = lines[0]
                for line in reversed(lines[1:]):
                    if line.strip() and (needle is None or needle in line):
                        yield line
            if len(rest) > MAX_LINE:
                rest, overlong = b"", True
        if rest.strip() and (needle is None or needle in rest):
            yield rest


def to_json(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))`` for the plain values of a record.

    The json package compiles regular expressions on import, which alone would cost a one-shot
    run more than all the rest of its history; its C string escaper is a fraction of that.
    """
    try:
        from _json import encode_basestring_ascii as quote
    except ImportError:  # another Python implementation
        from json.encoder import py_encode_basestring_ascii as quote
    return _encode(value, quote)


def _encode(value: Any, quote: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return str(quote(value))
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "null"
        return float.__repr__(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{quote(str(key))}:{_encode(item, quote)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(item, quote) for item in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} to the history")


def _plain(name: str) -> bool:
    """A name JSON writes as it is, so its bytes can be looked for before parsing a line."""
    return name.isascii() and all(char.isalnum() or char in "-_." for char in name)


def step_record(record: StepRecord) -> dict[str, Any]:
    """A step's part of the history record."""
    step: dict[str, Any] = {
        "number": record.number,
        "script": record.script,
        "name": record.title if record.title != record.script else None,
        # A word read from the environment (a token, say) as the file wrote it: records travel (notifications).
        "argv": shown_words(record.argv),
        "attempts": record.attempts,
        "returncode": record.returncode,
        "duration_s": round(record.duration_s, 3),
        "result": record.result,
    }
    if record.started_at is not None:
        step["started_at"] = _iso(record.started_at)
        step["ended_at"] = _iso(record.ended_at)
    if record.matrix:
        step["matrix"] = dict(record.matrix)
    if record.reason is not None:
        step["reason"] = record.reason
    if record.timed_out:
        step["timed_out"] = True
    if record.job_id is not None:
        step["job_id"] = record.job_id
        step["node"] = record.node
    return step


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="milliseconds") if when is not None else None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid())


def file_sha256(path: str) -> str | None:
    # hashlib loads OpenSSL (several ms); the built-in SHA-256 module costs a fraction of that.
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # Python up to 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef]  # Python 3.12+
        except ImportError:
            from hashlib import sha256  # type: ignore[assignment]
    try:
        with open(path, "rb") as handle:
            return sha256(handle.read()).hexdigest()
    except OSError:
        return None
