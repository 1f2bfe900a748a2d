"""The command line: parse options, then hand over to a plain function that returns the exit code."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import click

from lynx import __version__
from lynx.errors import EXIT_FAILED, EXIT_INTERRUPTED, Terminated

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="lynx")
def cli() -> None:
    """Lynx links the steps of an ML process and runs them one after another.

    The steps come from a YAML config; Lynx runs them once or on a cron schedule, in the
    foreground with a rerun dialog or unattended, and in the background until 'lynx stop'.
    """


def _complete_path(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Let the shell complete file names; unlike click.Path, this changes no validation."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


def _selection_options(command: Any) -> Any:
    """--from, --until and --only: which steps a run runs."""
    for option in reversed(
        [
            click.option("--from", "from_", default=None, metavar="STEP", help="Start at this step (number or name)."),
            click.option("--until", default=None, metavar="STEP", help="End after this step (number or name)."),
            click.option(
                "--only", multiple=True, metavar="STEP", help="Run only this step (number or name; repeatable)."
            ),
        ]
    ):
        command = option(command)
    return command


_config_file_option = click.option(
    "--config-file",
    "-cf",
    default="conf/config.yaml",
    show_default=True,
    metavar="PATH",
    shell_complete=_complete_path,
    help="The YAML config file.",
)


@cli.command()
@_config_file_option
@click.option(
    "--log-file",
    "-lf",
    default=None,
    metavar="PATH",
    shell_complete=_complete_path,
    help="Also write everything to this file (appending, rotating).",
)
@click.option(
    "--log-level",
    "-ll",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="What reaches the screen (the log file gets INFO and above, or DEBUG).",
)
@click.option(
    "--log-size",
    "-ls",
    type=click.IntRange(min=0),
    default=2097152,
    show_default=True,
    metavar="BYTES",
    help="Bytes before the log file rotates (0: never).",
)
@click.option(
    "--log-backup-count",
    "-lbc",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    metavar="N",
    help="Rotated log files kept.",
)
@click.option(
    "--non-interactive", "-ni", is_flag=True, help="No rerun dialog: a failed step ends the run; use the cron schedule."
)
@click.option(
    "--keep-running", "-kr", is_flag=True, help="With a cron schedule: a failed run does not end the schedule."
)
@click.option(
    "--background", "-bg", is_flag=True, help="Run detached in the background (implies -ni); stop with 'lynx stop'."
)
@click.option(
    "--name", default=None, metavar="NAME", help="With -bg: the scheduler's name (default: the config file's name)."
)
@_selection_options
@click.option("--detached", is_flag=True, hidden=True)
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def start(
    config_file: str,
    log_file: str | None,
    log_level: str,
    log_size: int,
    log_backup_count: int,
    non_interactive: bool,
    keep_running: bool,
    background: bool,
    detached: bool,
    name: str | None,
    from_: str | None,
    until: str | None,
    only: tuple[str, ...],
    overrides: tuple[str, ...],
) -> int:
    """Run the pipeline: once, or on the config's cron schedule with -ni or -bg.

    KEY=VALUE changes a value of the config for this run (vars.lr=0.01, steps.2.timeout=600;
    +KEY=VALUE adds a key).
    """
    _require_working_directory()
    from lynx.commands.start import start as run_start
    from lynx.commands.start_request import StartOptions

    options = StartOptions(
        config_file=config_file,
        log_file=log_file,
        log_level=log_level.upper(),
        log_size=log_size,
        log_backup_count=log_backup_count,
        non_interactive=non_interactive or background or detached,
        keep_running=keep_running,
        background=background,
        detached=detached,
        name=name,
        from_=from_,
        until=until,
        only=only,
        overrides=overrides,
        command_line=tuple(sys.argv[1:]),
    )
    return run_start(options)


@cli.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Stop every background Lynx started from this directory.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def stop(name: str | None, all_: bool, yes: bool) -> int:
    """Stop a background Lynx started from this directory (NAME: which one, when several run)."""
    _require_working_directory()
    from lynx.commands.stop import stop as run_stop

    if name is not None and all_:
        raise click.UsageError("give a NAME or --all, not both")
    return run_stop(name, all_=all_, yes=yes)


@cli.command()
@click.option(
    "-n", "limit", type=click.IntRange(min=0), default=10, show_default=True, metavar="N", help="Runs shown (0: all)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON array of history records.")
@click.option("--name", default=None, metavar="NAME", help="Only the runs of this scheduler (or config file name).")
def history(limit: int, as_json: bool, name: str | None) -> int:
    """Show the recent runs started from this directory, newest first."""
    _require_working_directory()
    from lynx.commands.history import history as show_history

    return show_history(limit=limit, as_json=as_json, name=name)


@cli.command()
@_config_file_option
@_selection_options
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def validate(
    config_file: str, from_: str | None, until: str | None, only: tuple[str, ...], overrides: tuple[str, ...]
) -> int:
    """Check the config without running it: each step's command line, the next fire times."""
    _require_working_directory()
    from lynx.commands.validate import validate as run_validate

    return run_validate(config_file, overrides=overrides, from_=from_, until=until, only=only)


@cli.command()
@click.argument("run_id", required=False, metavar="[RUN_ID]")
@click.option("--name", default=None, metavar="NAME", help="The newest failed run of this scheduler (or config name).")
@click.option("--non-interactive", "-ni", is_flag=True, help="No rerun dialog: a failed step ends the run.")
@click.option("--force", is_flag=True, help="Retry even though the config file changed since that run.")
def retry(run_id: str | None, name: str | None, non_interactive: bool, force: bool) -> int:
    """Rerun a failed or interrupted run from its first step that did not succeed (default: the newest)."""
    _require_working_directory()
    from lynx.commands.retry import retry as run_retry

    return run_retry(run_id, name=name, non_interactive=non_interactive, force=force)


@cli.command()
@_config_file_option
@click.option("--test", "test", is_flag=True, help="Send a test event on every channel of the config's 'notify'.")
def notify(config_file: str, test: bool) -> int:
    """Send a test notification on every channel: one line each, ok or why not."""
    _require_working_directory()
    if not test:
        raise click.UsageError("say --test to send a test event on every channel of the config's 'notify'")
    from lynx.commands.notify import notify_test

    return notify_test(config_file)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per scheduler.")
def status(name: str | None, as_json: bool) -> int:
    """Show the background Lynx schedulers of this directory: state, next run, last run."""
    _require_working_directory()
    from lynx.commands.status import status as run_status

    return run_status(name, as_json=as_json)


@cli.command()
@click.argument("name", required=False)
@click.option("--lines", "-n", type=click.IntRange(min=0), default=20, show_default=True, help="How many lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines, across rotations, until Ctrl+C.")
def logs(name: str | None, lines: int, follow: bool) -> int:
    """Print the end of a background Lynx's log file (NAME: which one, when several run)."""
    _require_working_directory()
    from lynx.commands.logs import logs as run_logs

    return run_logs(name, lines=lines, follow=follow)


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "all_", is_flag=True, help="Every scheduler recorded here that died (the default).")
def restore(names: tuple[str, ...], all_: bool) -> int:
    """Start again the background schedulers of this directory that died (a reboot, kill -9), as they were started."""
    _require_working_directory()
    from lynx.commands.restore import restore as run_restore

    return run_restore(names, all_=all_)


@cli.command()
@click.argument("action", type=click.Choice(["install", "remove"]))
@click.option(
    "--kind",
    type=click.Choice(["auto", "systemd", "cron"]),
    default="auto",
    show_default=True,
    help="A systemd user unit, or an @reboot crontab line (auto: systemd when it runs this machine).",
)
def service(action: str, kind: str) -> int:
    """Bring this directory's background schedulers back at boot ('lynx restore --all'), or stop doing so."""
    _require_working_directory()
    from lynx.commands.service import service as run_service

    return run_service(action, kind=kind)


def _require_working_directory() -> None:
    """Relative paths (config, scripts, log, pid file) mean nothing in a deleted directory."""
    from lynx.errors import ConfigError

    try:
        os.getcwd()
    except OSError as error:
        raise ConfigError(
            f"the current directory cannot be used ({error.strerror or error}; was it deleted?): "
            "change to an existing directory"
        ) from None


def _open_closed_standard_streams() -> None:
    """Started with a standard stream closed (``<&-``, ``>&-``, ``2>&-``): use /dev/null instead.

    Input is then as good as empty and output goes nowhere, as with ``> /dev/null``. The file
    descriptor is taken too, so that no file Lynx opens later (a log file, a pipe) becomes its
    standard output by accident.
    """
    for fd, name, mode in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY), (2, "stderr", os.O_WRONLY)):
        if getattr(sys, name) is not None:
            continue
        devnull = os.open(os.devnull, mode)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        stream = open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process
        setattr(sys, name, stream)


def main(argv: list[str] | None = None) -> None:
    """The console script: run the command and exit with its code."""
    _open_closed_standard_streams()
    try:
        code = cli.main(args=argv, prog_name="lynx", standalone_mode=False)
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except click.Abort as abort:
        code = EXIT_INTERRUPTED if isinstance(abort.__context__, KeyboardInterrupt) else EXIT_FAILED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except Terminated as terminated:
        code = terminated.exit_code
    _flush_stdout()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    # Everything is flushed and every step has ended: skip the interpreter's teardown of a
    # hundred modules, which costs each run about as much as Lynx's own work.
    os._exit(code if isinstance(code, int) else 0)


def _flush_stdout() -> None:
    """A reader that went away (``lynx start | head -1``) must not turn a finished run into exit 120."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        # What is still buffered can never be shown; let the interpreter's last flush go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
