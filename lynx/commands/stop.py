"""``lynx stop [NAME] [--all]``: stop background schedulers recorded in this directory.

A stopped scheduler's record is replaced by a tombstone (``.lynx/stopped/NAME.json``): ``lynx logs
NAME`` still finds its log, and it tells that it was stopped on purpose.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from lynx import daemon, dialog
from lynx.daemon import PID_FILE, Liveness
from lynx.errors import EXIT_FAILED, EXIT_OK, LynxError
from lynx.state import SchedulerEntry, describe_ending


def stop(
    name: str | None = None,
    *,
    all_: bool = False,
    yes: bool,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    directory: Path | None = None,
) -> int:
    """Run ``lynx stop`` and return its exit code.

    Args:
        name: stop the scheduler of this name; None: the only one (or ask which, on a terminal).
        all_: stop every scheduler recorded here.
        yes: do not ask for confirmation.
    """
    directory = directory or Path.cwd()

    def say(line: str) -> None:
        stdout.write(line + "\n")
        stdout.flush()

    # What cannot be stopped (unreadable records, ended or foreign ones, other users') is reported at
    # the end; it never keeps the others from being stopped.
    problems: list[str] = []
    with daemon.directory_lock(directory):
        entries = daemon.registered(directory, on_error=problems.append)
        if name is not None:
            # Only the record of that name matters.
            problems = [problem for problem in [daemon.unreadable_entry(directory, name)] if problem]
            if problems:
                raise LynxError(problems[0])
        nothing = not entries and not problems
        alive = []
        # Ended ones (or PIDs that now belong to another process) are cleaned up, never signalled.
        for entry in daemon.select(entries, name) if not nothing else []:
            living, process = daemon.liveness(entry, directory)
            refusal = daemon.not_signallable(entry, process) if living is Liveness.ALIVE else None
            if refusal is not None:
                problems.append(f"{refusal}; it was not signalled")
            elif living is Liveness.ALIVE:
                alive.append((entry, process))
            elif living is Liveness.UNKNOWN:
                problems.append(f"PID {entry.pid} ('{entry.name}') cannot be checked; it was not signalled")
            else:
                _forget_ended(directory, entry, living, say, problems)
    code = EXIT_OK
    if len(alive) > 1 and not all_ and name is None:
        alive = _choose(alive, stdin=stdin, stdout=stdout)
    if alive:
        for entry, _ in alive:
            say(f"Background Lynx: {_describe(entry)}")
        # Asked without holding the lock: a slow answer must not block starts and stops here.
        if yes or dialog.ask_yes_no(_question(alive), stdin=stdin, stdout=stdout):
            _end(directory, alive, say, problems)
        else:
            say("Not stopped.")
            code = EXIT_FAILED
    # What the schedulers stopped here (or a Lynx killed earlier) could not cancel, with SLURM away.
    left = _cancel_left_jobs(directory, say, problems)
    if nothing and not left:
        raise LynxError(f"no background Lynx to stop: there is no {PID_FILE} or .lynx/ entry in {directory}")
    if problems:
        raise LynxError("; ".join(problems))
    return code


def _cancel_left_jobs(directory: Path, say: Callable[[str], None], problems: list[str]) -> bool:
    """Cancel the SLURM jobs left here, if SLURM answers; a job that may still run is a problem
    (exit 1), never a silent success. Whether any job was left."""
    from lynx.history import JOBS_DIR

    if not (directory / JOBS_DIR).is_dir():
        return False  # no SLURM job was ever recorded here (and lynx.jobs need not be imported)
    from lynx.jobs import cancel_left_jobs

    # A stopped scheduler's watchdog may be ending its job right now: wait for it to be done.
    left = cancel_left_jobs(str(directory), on_error=problems.append, wait=2 * daemon.stop_grace())
    for each in left:
        say(each.message)
        if each.outcome == "unanswered":
            problems.append(f"{each.record.what} may still be running; {each.record.cancel_hint}")
    return bool(left)


def _end(
    directory: Path, chosen: Sequence[tuple[SchedulerEntry, Any]], say: Callable[[str], None], problems: list[str]
) -> None:
    with daemon.directory_lock(directory):
        now = {(e.name, e.pid, e.cmdline) for e in daemon.registered(directory, on_error=lambda message: None)}
        if any((entry.name, entry.pid, entry.cmdline) not in now for entry, _ in chosen):
            raise LynxError("the records changed while you were asked; nothing was signalled. Run 'lynx stop' again.")
        living = []
        for entry, process in chosen:
            state, _ = daemon.liveness(entry, directory)
            if state is Liveness.ALIVE:
                living.append((entry, process))
            else:
                _forget_ended(directory, entry, state, say, problems)
        if not living:
            return
        say("Terminating process ...")
        killed = daemon.end_trees([process for _, process in living])
        for entry, _ in living:
            try:
                daemon.forget(directory, entry)
            except LynxError as error:
                problems.append(f"the background Lynx '{entry.name}' was stopped, but {error.message}")
    if killed:
        grace = daemon.stop_grace()
        say(f"Had to kill (SIGKILL) {killed} process(es) that did not exit within {grace:g} s of SIGTERM.")
    for entry, _ in living:
        say(f"Stopped the background Lynx '{entry.name}' (PID {entry.pid}).")


def _forget_ended(
    directory: Path, entry: SchedulerEntry, state: Liveness, say: Callable[[str], None], problems: list[str]
) -> None:
    record = PID_FILE if daemon.is_legacy(entry) else f"record of '{entry.name}'"
    try:
        # A record of no Lynx, or of another directory's, leaves no tombstone: nothing here was stopped.
        daemon.forget(directory, entry, stopped=state not in (Liveness.FOREIGN, Liveness.ELSEWHERE))
        failure = None
    except LynxError as error:
        failure = error.message
    outcome = failure or f"removed the {record}"
    taken = daemon.pid_now_taken(entry.pid) if state is Liveness.REUSED else None
    if state is Liveness.ELSEWHERE:
        where = entry.elsewhere or "another directory"
        if failure is None:
            say(
                f"The {record} describes a background Lynx of {where}, not of this directory (a copy of it?); "
                "it was not signalled; removed the record here."
            )
        else:
            problems.append(f"the {record} describes a background Lynx of {where}; it was not signalled, but {failure}")
    elif state is Liveness.FOREIGN:
        command = " ".join(entry.cmdline)[:80]
        problems.append(f"PID {entry.pid} ({command}) is not a Lynx scheduler; it was not signalled; {outcome}")
    elif taken:
        problems.append(
            f"PID {entry.pid} now belongs to another process ({taken}); it was not signalled. "
            f"The recorded Lynx '{entry.name}' has ended; {outcome}."
        )
    elif failure is None:
        why = f" ({describe_ending(entry.ended)})" if entry.ended else ""
        say(f"The Lynx process (PID {entry.pid}) has already ended{why}; removed the stale {record}.")
    else:
        problems.append(f"the Lynx process (PID {entry.pid}) has already ended, but {failure}")


def _choose(
    alive: list[tuple[SchedulerEntry, Any]], *, stdin: TextIO, stdout: TextIO
) -> list[tuple[SchedulerEntry, Any]]:
    """Several run here and none was named: ask which one on a terminal; refuse to guess without one."""
    names = [entry.name for entry, _ in alive]
    if not stdin.isatty():
        raise LynxError(
            f"{len(alive)} background Lynx run here ({', '.join(names)}): "
            "name one ('lynx stop NAME') or stop them all with 'lynx stop --all'"
        )
    stdout.write("Several background Lynx run here:\n")
    for number, (entry, _) in enumerate(alive, 1):
        stdout.write(f"  {number}) {_describe(entry)}\n")
    while True:
        answer = dialog.ask("Which one do you want to stop? (name or number; Enter: none)", stdin=stdin, stdout=stdout)
        if not answer:
            raise LynxError("nothing was chosen; nothing was signalled")
        for number, (entry, process) in enumerate(alive, 1):
            if answer in (entry.name, str(number)):
                return [(entry, process)]
        stdout.write(f"Please answer one of: {', '.join(names)} (or 1-{len(alive)}).\n")


def _question(alive: Sequence[tuple[SchedulerEntry, Any]]) -> str:
    if len(alive) == 1:
        return f"Are you sure you want to terminate the process (PID {alive[0][0].pid})? (y/n)"
    pids = ", ".join(str(entry.pid) for entry, _ in alive)
    return f"Are you sure you want to terminate these {len(alive)} processes (PIDs {pids})? (y/n)"


def _describe(entry: SchedulerEntry) -> str:
    return (
        f"'{entry.name}', PID {entry.pid} (user {entry.username or '?'}, started {entry.started_at or '?'})\n"
        f"  command: {daemon.user_command(entry)}\n"
        f"  config: {entry.config_file or '?'}; log: {entry.log_file or 'discarded'}"
    )
