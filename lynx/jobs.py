"""SLURM jobs that may outlive the Lynx that submitted them: one small record each in ``.lynx/jobs/``.

A record is written when a SLURM step is submitted (its job id added as soon as squeue shows it)
and removed once SLURM says the job has ended. It is left behind only when Lynx could not end the
job: Lynx was killed (its watchdog then tries), or the SLURM controller did not answer when the job
had to be cancelled. The next ``lynx start``, ``lynx status`` or ``lynx stop`` in the directory, and
a scheduler before its next SLURM step, cancel such jobs once the controller answers again
(:func:`cancel_left_jobs`); until then they say which job may still run and how to cancel it.

A job is only ever cancelled when squeue shows it with the record's comment (a tag no other job
has): a job id SLURM has since given to another job is never touched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

from lynx.children import boot_id, process_start
from lynx.history import JOBS_DIR
from lynx.schema import parse_json
from lynx.statefiles import read_bounded, replace_atomically

# A record is a few hundred bytes: anything much larger is not one.
MAX_RECORD = 64 * 1024
# How long SLURM commands may take before the controller counts as not answering.
COMMAND_TIMEOUT = 15.0
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
     "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
)  # fmt: skip


class JobRecord(NamedTuple):
    """One submitted job: how to find it again, whose it is, and why it may have been left.

    A named tuple, not a dataclass: a dataclass of fifteen fields costs each SLURM run a
    millisecond and a half to build.
    """

    # The job's name (lynx:<pipeline>:<step>) and its --comment, which no other job has.
    job_name: str
    tag: str
    # Known once squeue has shown the job.
    job_id: str | None
    pipeline: str
    step: str
    # The background scheduler that ran it (None: a foreground Lynx).
    scheduler: str | None
    # The Lynx that submitted it: its PID, its start in clock ticks since boot, and that boot.
    owner_pid: int
    owner_start: int | None
    boot_id: str | None
    submitted_at: str
    # The cluster: SLURM_CONF as the job was submitted with (None: SLURM's default config).
    slurm_conf: str | None
    # Set when Lynx gave up ending the job, with why.
    abandoned_at: str | None = None
    why: str | None = None
    # Where it was read from or written to; not part of the file.
    path: str | None = None

    @property
    def what(self) -> str:
        """The job as messages name it."""
        job = f"SLURM job {self.job_id}" if self.job_id else f"a SLURM job named '{self.job_name}'"
        owner = f"the background Lynx '{self.scheduler}'" if self.scheduler else "Lynx"
        return f"{job} ({self.step} of '{self.pipeline}', submitted by {owner}, PID {self.owner_pid})"

    @property
    def cancel_hint(self) -> str:
        if self.job_id:
            return f"cancel it with 'scancel {self.job_id}'"
        return f"find it with 'squeue --name={self.job_name} -o \"%A %k\"' (comment '{self.tag}') and scancel it"


_KEYS = tuple(name for name in JobRecord._fields if name != "path")
_OPTIONAL_TEXT = ("job_id", "scheduler", "boot_id", "slurm_conf", "abandoned_at", "why")


def owner_alive(record: JobRecord) -> bool:
    """The Lynx that submitted the job still runs."""
    if record.owner_start is None:
        try:
            os.kill(record.owner_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return process_start(record.owner_pid) == record.owner_start and boot_id() == record.boot_id


class JobRegistry:
    """The records of the jobs this Lynx submits, under ``directory`` (default: the working directory,
    which moves with the folder). A record that cannot be written is warned about once: the job
    still runs, only the safety net is missing.

    Args:
        scheduler: the background scheduler's name, None in the foreground.
        warn: told once when a record cannot be written.
    """

    def __init__(self, *, scheduler: str | None = None, directory: str = "", warn: Callable[[str], None]) -> None:
        self.scheduler = scheduler
        self.directory = directory
        self.warn = warn
        self.warned = False

    def submitted(self, *, job_name: str, tag: str, pipeline: str, step: str, env: Mapping[str, str]) -> JobRecord:
        """Record a job as it is submitted (before SLURM has given it an id)."""
        pid = os.getpid()
        record = JobRecord(
            job_name=job_name,
            tag=tag,
            job_id=None,
            pipeline=pipeline,
            step=step,
            scheduler=self.scheduler,
            owner_pid=pid,
            owner_start=process_start(pid),
            boot_id=boot_id(),
            submitted_at=now_stamp(),
            slurm_conf=env.get("SLURM_CONF"),
            path=os.path.join(self.directory, JOBS_DIR, tag.rsplit(" ", 1)[-1] + ".json"),
        )
        self._write(record, make_folder=True)
        return record

    def update(self, record: JobRecord, **changes: Any) -> JobRecord:
        """The record with ``changes`` (the job id once known; abandoned_at and why when Lynx gives up)."""
        record = record._replace(**changes)
        self._write(record)
        return record

    def forget(self, record: JobRecord) -> None:
        """SLURM has said the job has ended."""
        remove(record)

    def _write(self, record: JobRecord, make_folder: bool = False) -> None:
        assert record.path is not None
        try:
            write_record(record, make_folder=make_folder)
        except OSError as error:
            if not self.warned:
                self.warned = True
                folder = os.path.dirname(record.path) or "."
                self.warn(
                    f"Cannot record {record.what} in {folder} ({error.strerror or error}): "
                    "should Lynx be killed, it would not be cancelled later."
                )


def write_record(record: JobRecord, *, make_folder: bool = False) -> None:
    """Replace the record's file by a new one (temp file + ``os.replace``; no fsync: a record only has
    to outlive Lynx, not the machine), with the modes the umask gives."""
    from lynx.history import to_json  # the history's own JSON writer: the json package costs a millisecond

    assert record.path is not None
    if make_folder:
        os.makedirs(os.path.dirname(record.path) or ".", exist_ok=True)
    data = (to_json({key: getattr(record, key) for key in _KEYS}) + "\n").encode("utf-8")
    replace_atomically(record.path, data, durable=False)


def remove(record: JobRecord) -> None:
    if record.path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record.path)


def has_records(directory: str = "") -> bool:
    """Whether any job is recorded (a directory listing: what a scheduler pays before each SLURM step)."""
    try:
        names = os.listdir(os.path.join(directory, JOBS_DIR))
    except OSError:
        return False
    return any(name.endswith(".json") and not name.startswith(".") for name in names)


def read_records(directory: str = "", *, on_error: Callable[[str], object]) -> list[JobRecord]:
    """Every readable record; one that is not (a symlink, a FIFO, too large, not a record) is named
    through ``on_error`` and left alone."""
    folder = os.path.join(directory, JOBS_DIR)
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".json") and not name.startswith("."))
    except OSError:
        return []
    records = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            records.append(read_record(path))
        except FileNotFoundError:
            pass  # ended meanwhile
        except (OSError, ValueError) as error:
            on_error(f"{path}: not a Lynx job record ({getattr(error, 'strerror', None) or error}); it is left alone")
    return records


def read_record(path: str) -> JobRecord:
    """The record in ``path``, read without following a symlink or waiting on a FIFO, at most MAX_RECORD bytes.

    Raises:
        ValueError: it is not a record; OSError: it cannot be read.
    """
    try:
        values = parse_json(read_bounded(path, MAX_RECORD))
    except ValueError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError("not a JSON object")
    for key in ("job_name", "tag", "pipeline", "step", "submitted_at"):
        if not isinstance(values.get(key), str):
            raise ValueError(f"'{key}' is not text")
    for key in _OPTIONAL_TEXT:
        if values.get(key) is not None and not isinstance(values[key], str):
            raise ValueError(f"'{key}' is not text")
    for key in ("owner_pid", "owner_start"):
        value = values.get(key)
        if (value is not None or key == "owner_pid") and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"'{key}' is not a number")
    if values["owner_pid"] <= 0:
        raise ValueError("'owner_pid' is not a positive number")
    if values.get("job_id") is not None and not values["job_id"].isdigit():
        raise ValueError("'job_id' is not a job id")
    fields: dict[str, Any] = {key: values.get(key) for key in _KEYS}
    return JobRecord(**fields, path=path)


class LeftJob(NamedTuple):
    """What became of a left job when Lynx tried to cancel it."""

    record: JobRecord
    # 'cancelled', 'ended' (nothing to cancel), or 'unanswered' (it may still run; the record stays).
    outcome: str
    message: str


def cancel_left_jobs(
    directory: str = "",
    *,
    environ: Mapping[str, str] = os.environ,
    on_error: Callable[[str], object],
    wait: float = 0.0,
) -> list[LeftJob]:
    """Cancel the recorded jobs whose Lynx has died or gave up on them, once the controller answers.

    Args:
        wait: how long to wait for another Lynx that is at it (a watchdog ending the job of its
            Lynx, another command tidying up); after that, nothing is done.
    """
    if not has_records(directory):
        return []
    with records_locked(directory, wait=wait) as locked:
        if not locked:
            return []
        return [
            _cancel_left(record, environ)
            for record in read_records(directory, on_error=on_error)
            if record.abandoned_at is not None or not owner_alive(record)
        ]


@contextlib.contextmanager
def records_locked(directory: str = "", *, wait: float = 0.0) -> Iterator[bool]:
    """Hold an flock on the records' folder while acting on left jobs, so that two Lynx never act
    on one job at once; yields whether it was taken (within ``wait`` seconds)."""
    import fcntl
    import time

    try:
        fd = os.open(os.path.join(directory, JOBS_DIR), os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        yield True
    finally:
        os.close(fd)


def _cancel_left(record: JobRecord, environ: Mapping[str, str]) -> LeftJob:
    env = slurm_env(record, environ)
    down = controller_down(env)
    if down is not None:
        return LeftJob(record, "unanswered", _still_running(record, f"the SLURM controller does not answer ({down})"))
    found = find_job(record, env)
    if found is None:
        return LeftJob(record, "unanswered", _still_running(record, "squeue does not answer"))
    job_id, state = found
    if job_id is None:
        remove(record)
        # Lynx was killed between recording the job and srun submitting it, or it ended long ago.
        return LeftJob(record, "ended", f"{record.what} is not in SLURM's queue (it has ended, or was never queued).")
    record = record._replace(job_id=job_id)
    if state not in ACTIVE_STATES:
        remove(record)
        return LeftJob(record, "ended", f"{record.what} has ended.")
    _, said = slurm_command(["scancel", job_id], env)
    if said:
        # scancel refused it: right, if it has ended meanwhile.
        again = find_job(record, env)
        if again is None or (again[0] is not None and again[1] in ACTIVE_STATES):
            return LeftJob(record, "unanswered", _still_running(record, f"scancel {job_id}: {said}"))
    remove(record)
    return LeftJob(record, "cancelled", f"Cancelled {record.what}, which was left {state}.")


def _still_running(record: JobRecord, why: str) -> str:
    return f"{record.what} may still be running: {why}. {cancelled_later(record.cancel_hint)}"


def cancelled_later(hint: str) -> str:
    """How a job that may still run gets cancelled: by the next 'lynx' command here, or by hand (``hint``)."""
    return f"Lynx cancels it at the next 'lynx start', 'lynx status' or 'lynx stop' here once SLURM answers; or {hint}."


def now_stamp() -> str:
    """The local time, as records keep it."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")


def slurm_env(record: JobRecord, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` pointed at the record's cluster."""
    env = dict(environ)
    if record.slurm_conf is None:
        env.pop("SLURM_CONF", None)
    else:
        env["SLURM_CONF"] = record.slurm_conf
    return env


def controller_down(env: Mapping[str, str]) -> str | None:
    """Why the SLURM controller does not answer (``scontrol ping``: quick either way), or None if it does."""
    try:
        answer = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, env=dict(env), timeout=COMMAND_TIMEOUT
        )
    except OSError as error:
        return f"cannot run scontrol: {error.strerror or error}"
    except subprocess.TimeoutExpired:
        return "scontrol ping timed out"
    return ping_problem(answer.returncode, answer.stdout, answer.stderr)


def ping_problem(returncode: int, out: str, err: str) -> str | None:
    """What ``scontrol ping``'s answer says is wrong with the controller, or None when it is up."""
    if returncode != 0 or "DOWN" in out:
        # 'Slurmctld(primary) at HOST is DOWN' (then a banner of asterisks), or why scontrol could not ask.
        said = [line.strip() for line in (out + err).splitlines() if line.strip()]
        return f"scontrol ping: {said[0] if said else f'exit code {returncode}'}"
    return None


def find_job(record: JobRecord, env: Mapping[str, str]) -> tuple[str | None, str] | None:
    """(job id, state) of the record's job as squeue shows it; (None, '') when squeue does not list
    it; None when squeue does not answer. A job without the record's comment is not the record's."""
    which = ["-j", record.job_id] if record.job_id else ["-n", record.job_name]
    output, said = slurm_command(["squeue", "-h", "-t", "all", *which, "-o", "%A|%T|%k"], env)
    if output is None:
        # A job that ended a while ago (MinJobAge) is no longer known: squeue -j refuses its id.
        return (None, "") if "Invalid job id" in said else None
    for line in output.splitlines():
        job_id, state, comment = [*line.split("|", 2), "", ""][:3]
        if comment == record.tag:
            return job_id, state
    return None, ""


def slurm_command(command: Sequence[str], env: Mapping[str, str]) -> tuple[str | None, str]:
    """Run a SLURM command: (its output, '') when it succeeds, else (None, what it said)."""
    try:
        answer = subprocess.run(list(command), capture_output=True, text=True, env=dict(env), timeout=COMMAND_TIMEOUT)
    except OSError as error:
        return None, f"cannot run {command[0]}: {error.strerror or error}"
    except subprocess.TimeoutExpired:
        return None, f"{command[0]} did not answer within {COMMAND_TIMEOUT:g} s"
    if answer.returncode != 0:
        return None, " ".join(answer.stderr.split()) or f"exit code {answer.returncode}"
    return answer.stdout, ""
