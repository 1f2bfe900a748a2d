"""The frozen records of notification channels (a config's ``notify`` items): loaded only by configs that
notify, so that a run without them pays nothing for these records. Imports nothing of Lynx's."""

from __future__ import annotations

import os
from dataclasses import dataclass

# What a notification channel may be told about: a run's start and its three ends.
EVENTS = ("start", "success", "failure", "interrupted")


@dataclass(frozen=True)
class Mail:
    """An ``email`` channel's SMTP server and addresses; the password is read from ``password_env`` when sending."""

    host: str
    to: tuple[str, ...]
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    user: str | None = None
    password_env: str | None = None
    # The From address; None: the user if it is an address, else the local user at this host.
    sender: str | None = None


@dataclass(frozen=True)
class Channel:
    """One ``notify`` item: where to tell (exactly one kind) and about which events."""

    number: int
    # 'command', 'webhook', 'email', 'healthchecks' or 'apprise'.
    kind: str
    events: tuple[str, ...] = ("failure",)
    timeout: float = 10.0
    # How many bytes of the end of the run's output an event carries (0: none).
    log_tail: int = 10_000
    # command: the program and its words (a .py script's path found as a step's is).
    command: tuple[str, ...] = ()
    # command: the interpreter for a .py program (None: the one running Lynx).
    python: str | None = None
    # webhook, healthchecks: the URL (a secret: it is never shown whole).
    url: str | None = None
    # webhook: extra request headers (secrets too).
    headers: tuple[tuple[str, str], ...] = ()
    mail: Mail | None = None
    # apprise: its URLs (secrets).
    apprise: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The channel as messages show it, without its secrets: ``webhook (https://hooks.example.com/…)``."""
        if self.kind == "command":
            return f"command ({os.path.basename(self.command[0])})"
        if self.mail is not None:
            return f"email ({', '.join(self.mail.to)} via {self.mail.host}:{self.mail.port})"
        if self.kind == "apprise":
            return f"apprise ({', '.join(masked_url(url, host=False) for url in self.apprise)})"
        return f"{self.kind} ({masked_url(self.url or '')})"

    def argv(self, python: str) -> tuple[str, ...]:
        """A command channel's command line: a .py script with ``python`` (or the config's), anything else directly."""
        if self.command[0].endswith(".py"):
            return (self.python or python, *self.command)
        return self.command


def masked_url(url: str, *, host: bool = True) -> str:
    """``scheme://host/…``: what may be shown of a URL whose path, user or query is a secret.

    Without ``host`` only the scheme is shown (an Apprise URL often holds its token where a host would be).
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "…"
    if not host:
        return f"{scheme}://…"
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{authority.rpartition('@')[2]}/…"
