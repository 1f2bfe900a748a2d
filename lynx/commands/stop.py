"""``lynx stop [NAME] [--all]``: stop background schedulers recorded in this directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from lynx import daemon, dialog
from lynx.daemon import PID_FILE, Liveness
from lynx.errors import EXIT_FAILED, EXIT_OK, LynxError
from lynx.state import SchedulerEntry


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

    with daemon.directory_lock(directory):
        entries = daemon.registered(directory)
        if not entries:
            raise LynxError(f"no background Lynx to stop: there is no {PID_FILE} or .lynx/ entry in {directory}")
        if name is not None:
            entries = [entry for entry in entries if entry.name == name]
            if not entries:
                raise LynxError(f"no background Lynx named '{name}' here; {_choices(daemon.registered(directory))}")
        problems: list[str] = []
        alive = []
        # Ended ones (or PIDs that now belong to another process) are cleaned up, never signalled.
        for entry in entries:
            living, process = daemon.liveness(entry)
            if living is Liveness.ALIVE:
                alive.append((entry, process))
            else:
                _forget_ended(directory, entry, living, say, problems)
    if len(alive) > 1 and not all_ and name is None:
        alive = _choose(alive, stdin=stdin, stdout=stdout)
    for entry, process in alive:
        refusal = daemon.not_signallable(entry, process)
        if refusal is not None:
            problems.append(f"{refusal}; it was not signalled")
    if problems:
        raise LynxError("; ".join(problems))
    if not alive:
        return EXIT_OK
    for entry, _ in alive:
        say(f"Background Lynx: {_describe(entry)}")
    # Asked without holding the lock: a slow answer must not block starts and stops here.
    if not yes and not dialog.ask_yes_no(_question(alive), stdin=stdin, stdout=stdout):
        say("Not stopped.")
        return EXIT_FAILED
    return _end(directory, alive, say)


def _end(directory: Path, chosen: Sequence[tuple[SchedulerEntry, Any]], say: Callable[[str], None]) -> int:
    with daemon.directory_lock(directory):
        now = {(entry.name, entry.pid, entry.cmdline) for entry in daemon.registered(directory)}
        if any((entry.name, entry.pid, entry.cmdline) not in now for entry, _ in chosen):
            raise LynxError("the records changed while you were asked; nothing was signalled. Run 'lynx stop' again.")
        living = []
        problems: list[str] = []
        for entry, process in chosen:
            state, _ = daemon.liveness(entry)
            if state is Liveness.ALIVE:
                living.append((entry, process))
            else:
                _forget_ended(directory, entry, state, say, problems)
        if living:
            say("Terminating process ...")
            killed = daemon.end_trees([process for _, process in living])
            for entry, _ in living:
                daemon.forget(directory, entry)
    if problems:
        raise LynxError("; ".join(problems))
    if living and killed:
        grace = daemon.stop_grace()
        say(f"Had to kill (SIGKILL) {killed} process(es) that did not exit within {grace:g} s of SIGTERM.")
    for entry, _ in living:
        say(f"Stopped the background Lynx '{entry.name}' (PID {entry.pid}).")
    return EXIT_OK


def _forget_ended(
    directory: Path, entry: SchedulerEntry, state: Liveness, say: Callable[[str], None], problems: list[str]
) -> None:
    daemon.forget(directory, entry)
    record = PID_FILE if daemon.is_legacy(entry) else f"record of '{entry.name}'"
    taken = daemon.pid_now_taken(entry.pid) if state is Liveness.REUSED else None
    if taken:
        problems.append(
            f"PID {entry.pid} now belongs to another process ({taken}); it was not signalled. "
            f"The recorded Lynx '{entry.name}' has ended; removed the {record}."
        )
    else:
        say(f"The Lynx process (PID {entry.pid}) has already ended; removed the stale {record}.")


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
        f"  command: {' '.join(entry.cmdline)}\n"
        f"  config: {entry.config_file or '?'}; log: {entry.log_file or 'discarded'}"
    )


def _choices(entries: Sequence[SchedulerEntry]) -> str:
    return f"recorded here: {', '.join(entry.name for entry in entries)}" if entries else "none is recorded here"
