"""The one family of expected failures: each is shown as a single ``Error: ...`` line."""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class LynxError(click.ClickException):
    """An expected failure; ``exit_code`` says which kind."""

    exit_code = EXIT_FAILED

    def format_message(self) -> str:
        """One line, whatever the message quotes (a script name with a newline in it, say)."""
        return self.message.replace("\r", "\\r").replace("\n", "\\n")


class ConfigError(LynxError):
    """The config file, or an option's value, is unusable; nothing has run."""

    exit_code = EXIT_USAGE


class Terminated(BaseException):
    """Raised in the main thread when a termination signal (SIGTERM, SIGHUP) arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
