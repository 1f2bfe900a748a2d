"""The command line: parse options, then hand over to a plain function that returns the exit code."""

from __future__ import annotations

import contextlib
import os
import sys

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


@cli.command()
@click.option(
    "--config-file", "-cf", default="conf/config.yaml", show_default=True, metavar="PATH", help="The YAML config file."
)
@click.option(
    "--log-file", "-lf", default=None, metavar="PATH", help="Also write everything to this file (appending, rotating)."
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
@click.option("--detached", is_flag=True, hidden=True)
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
) -> int:
    """Run the pipeline: once, or on the config's cron schedule with -ni or -bg."""
    from lynx.commands.start import StartOptions
    from lynx.commands.start import start as run_start

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
    )
    return run_start(options)


@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def stop(yes: bool) -> int:
    """Stop the background Lynx started from this directory."""
    from lynx.commands.stop import stop as run_stop

    return run_stop(yes=yes)


def main(argv: list[str] | None = None) -> None:
    """The console script: run the command and exit with its code."""
    if sys.stdin is None:  # started with standard input closed (<&-): as good as empty
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
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
