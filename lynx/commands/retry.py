"""``lynx retry [RUN_ID]``: rerun a failed or interrupted run from its first step that did not succeed.

The run is found in the history of this directory, read from its end. The retry uses that run's
config file, selection and overrides; the steps before its first failed one are skipped, the rest run,
in the foreground, once; the new run is recorded with ``retry_of``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, TextIO

from lynx.errors import ConfigError
from lynx.history import file_sha256, read_runs

# A run with one of these results can be retried ('lost': Lynx died while it ran).
RETRIABLE = ("failed", "interrupted", "lost")


def retry(
    run_id: str | None,
    *,
    name: str | None = None,
    non_interactive: bool = False,
    force: bool = False,
    directory: str | None = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Run ``lynx retry`` and return its exit code.

    Raises:
        ConfigError: no such run, an ambiguous id, a run that succeeded, no failed run at all, or a config
            changed since the run (without ``force``); nothing runs (exit 2).
    """
    from lynx.commands.start import start
    from lynx.commands.start_request import StartOptions

    run = find_run(directory or os.getcwd(), run_id, name=name)
    config_file = run.get("config_file")
    if not isinstance(config_file, str) or not os.path.isfile(config_file):
        raise ConfigError(f"run {run['run_id']}: its config file {config_file} no longer exists")
    if not force and file_sha256(config_file) != run.get("config_sha256"):
        raise ConfigError(
            f"{config_file} has changed since run {run['run_id']}: the steps that succeeded then may not be the "
            "ones it describes now; retry with --force to run it anyway"
        )
    overrides = tuple(text for text in run.get("overrides") or () if isinstance(text, str))
    given = run.get("selection")
    selection: dict[str, Any] = given if isinstance(given, dict) else {}
    from_, until, only = _from_first_failure(config_file, run, overrides, selection)
    stdout.write(f"Retrying run {run['run_id']} ({run.get('result')}) from step {from_ or ', '.join(only)}.\n")
    stdout.flush()
    options = StartOptions(
        config_file=config_file,
        non_interactive=non_interactive,
        from_=from_,
        until=until,
        only=only,
        overrides=overrides,
        retry_of=str(run["run_id"]),
    )
    return start(options, stdin=stdin, stdout=stdout, environ=environ)


def find_run(directory: str, run_id: str | None, *, name: str | None = None) -> dict[str, Any]:
    """The run ``run_id`` names (a unique prefix is enough), else the newest failed or interrupted one.

    Raises:
        ConfigError: as :func:`retry` says.
    """
    if run_id is None:
        # Newest first: a run retried to success is seen (through its retry's retry_of) before it.
        retried: set[str] = set()

        def newest_failed(run: dict[str, Any]) -> bool:
            if run.get("result") == "ok" and isinstance(run.get("retry_of"), str):
                retried.add(run["retry_of"])
            return run.get("result") in RETRIABLE and run.get("run_id") not in retried

        found = read_runs(directory, limit=1, name=name, accept=newest_failed)
        if not found:
            which = f" of '{name}'" if name is not None else ""
            raise ConfigError(
                f"there is no failed or interrupted run{which} in this directory's history to retry "
                "(runs retried to success are left out)"
            )
        return found[0]
    found = read_runs(directory, limit=2, name=name, run_id=run_id)
    if not found:
        raise ConfigError(f"no run in this directory's history has an id starting with {run_id!r}")
    if len(found) > 1:
        ids = ", ".join(str(run.get("run_id")) for run in found)
        raise ConfigError(f"{run_id!r} is the start of several runs' ids ({ids}, …): give more of it")
    run = found[0]
    if run.get("result") not in RETRIABLE:
        raise ConfigError(f"run {run['run_id']} ended {run.get('result')}: there is nothing to retry")
    return run


def _from_first_failure(
    config_file: str, run: dict[str, Any], overrides: tuple[str, ...], selection: dict[str, Any]
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """The --from, --until and --only of the retry: the run's own, starting at its first step that did not
    succeed (a step none of whose attempts ended ok, or that it never reached)."""
    from lynx.config import load_pipeline
    from lynx.selection import select_steps, step_ref

    pipeline = load_pipeline(config_file, overrides=overrides)
    only = tuple(str(each) for each in selection.get("only") or ())
    chosen = select_steps(
        pipeline,
        from_=step_ref(selection.get("from")),
        until=step_ref(selection.get("until")),
        only=only,
    )
    wanted = sorted(chosen.numbers) if chosen is not None else sorted({step.number for step in pipeline.steps})
    succeeded: dict[int, bool] = {}
    for step in run.get("steps") or ():
        if isinstance(step, dict) and isinstance(step.get("number"), int):
            number = step["number"]
            succeeded[number] = succeeded.get(number, True) and step.get("result") == "ok"
    first = next((number for number in wanted if not succeeded.get(number, False)), None)
    if first is None:
        raise ConfigError(f"run {run['run_id']} ran every selected step to success: there is nothing to retry")
    if only:
        return None, None, tuple(str(number) for number in wanted if number >= first)
    return str(first), step_ref(selection.get("until")), ()
