"""What every channel's ``send`` is given and may raise: the one contract of the channel modules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

from lynx.channels import Channel

# Retries of a connection error or a 5xx answer (webhook, ping), each after this many seconds.
BACKOFF = (0.5, 1.0)


class NotifyError(Exception):
    """A channel could not deliver an event; the message says why, without the channel's secrets."""


@dataclass(frozen=True)
class Context:
    """What a channel may need besides the event: Lynx's environment and interpreter, the log file, a logger."""

    environ: Mapping[str, str]
    python: str
    log_file: str | None
    # Says a line in Lynx's log (a hook command's output).
    say: Callable[[str], None]


def secrets_of(channel: Channel, environ: Mapping[str, str]) -> list[str]:
    """The texts of ``channel`` that must never be shown: URLs and their parts, header values, user, password."""
    found: list[str] = []
    for url in (channel.url, *channel.apprise):
        if url:
            found.append(url)
            found += [part for part in re.split(r"[/:@?&=#]+", url.partition("://")[2]) if len(part) >= 6]
    found += [value for _, value in channel.headers]
    if channel.mail is not None:
        found += [channel.mail.user or ""]
        if channel.mail.password_env:
            found.append(environ.get(channel.mail.password_env, ""))
    # Longest first: a URL goes before the parts it holds.
    return sorted({secret for secret in found if len(secret) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by '…' (what a server or library says may quote them)."""
    for secret in secrets:
        text = text.replace(secret, "…")
    return " ".join(text.split())
