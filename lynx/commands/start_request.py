"""What ``lynx start`` is asked for, and the checks each way of starting makes before anything runs: in the
foreground, at the terminal of ``lynx start -bg``, and in the detached scheduler it starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from lynx.logs import check_log_file
from lynx.records import Pipeline


@dataclass(frozen=True)
class StartOptions:
    """The options of ``lynx start``, and of the runs ``lynx retry`` and ``lynx restore`` start."""

    config_file: str
    # The defaults are the command line's (lynx.cli), for the runs 'lynx retry' and 'lynx restore' start.
    log_file: str | None = None
    log_level: str = "INFO"
    log_size: int = 2097152
    log_backup_count: int = 3
    non_interactive: bool = False
    keep_running: bool = False
    background: bool = False
    detached: bool = False
    # The background scheduler's name (default: the config file's name without extension).
    name: str | None = None
    # The command line as typed after 'lynx' (kept in a background scheduler's record, shown by 'lynx stop').
    command_line: tuple[str, ...] = ()
    # The steps to run (--from, --until, --only: numbers or names) and KEY=VALUE changes to the config.
    from_: str | None = None
    until: str | None = None
    only: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    # Set by 'lynx retry': the run this one retries; it runs once, whatever the config's cron section.
    retry_of: str | None = None
    # With -bg and no --log-file: ask for one on a terminal (not 'lynx restore', which starts it as it was).
    ask_log_file: bool = True

    @property
    def request(self) -> dict[str, Any]:
        """What the history records of how the run was asked for (only what was given)."""
        request: dict[str, Any] = {}
        if self.overrides:
            request["overrides"] = list(self.overrides)
        if self.retry_of is not None:
            request["retry_of"] = self.retry_of
        return request


def cancel_left_jobs(
    info: Callable[[str], object], warning: Callable[[str], object], environ: Mapping[str, str]
) -> None:
    """SLURM jobs an earlier Lynx here could not end (it was killed, or the controller did not
    answer) are cancelled now, if SLURM answers; those that may still run are named."""
    from lynx.history import JOBS_DIR

    if not os.path.isdir(JOBS_DIR):
        return  # no SLURM job was ever recorded here (and lynx.jobs need not be imported)
    from lynx.jobs import cancel_left_jobs as cancel

    for left in cancel(environ=environ, on_error=warning):
        (warning if left.outcome == "unanswered" else info)(left.message)


def check_pipeline_log_file(log_file: str, pipeline: Pipeline) -> None:
    """A log file that is the config or a step's script (a slip of -lf for -cf) is refused."""
    protected = {step.path: f"the script of {step.label}" for step in reversed(pipeline.steps)}
    protected[pipeline.source] = "the config file (did you mean -cf?)"
    check_log_file(os.path.expanduser(log_file), protected)
