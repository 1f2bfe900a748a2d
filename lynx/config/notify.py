"""Building and checking the ``notify`` list: each channel's keys, checked up front like a step's.

A message never quotes a URL, a header or a user name: they are secrets (a Healthchecks URL is one
by itself), and these errors reach the screen.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from lynx.channels import EVENTS, Channel, Mail
from lynx.config.steps import StepContext, split_arguments
from lynx.config.values import as_written, check_flag, check_number, kind_of, shown, unknown_key
from lynx.errors import ConfigError

KINDS = ("command", "webhook", "email", "healthchecks", "apprise")
NOTIFY_KEYS = (*KINDS, "on", "timeout", "log_tail", "headers")
EMAIL_KEYS = ("to", "host", "port", "starttls", "ssl", "user", "password_env", "from")
DEFAULT_EVENTS = ("failure",)
# Far more than any service takes in one message (Healthchecks keeps 100 kB of a ping's body).
MAX_LOG_TAIL = 1024 * 1024
_URL = re.compile(r"https?://[^/?#@\s]*@?[^/?#\s@]+(?:[/?#]\S*)?")
_SCHEME_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def build_channels(raw: Any, context: StepContext) -> tuple[Channel, ...]:
    """The ``notify`` list as channels (null or empty: none).

    Raises:
        ConfigError: naming the item by its number and kind, and the key.
    """
    source = context.source
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(
            f"{source}: 'notify' must be a list of channels, each with one of {', '.join(KINDS)}; not a {kind_of(raw)}"
        )
    return tuple(_channel(number, item, context) for number, item in enumerate(raw, 1))


def _channel(number: int, raw: Any, context: StepContext) -> Channel:
    where = f"{context.source}: notify item {number}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a channel must be a mapping with one of {', '.join(KINDS)}, not a {kind_of(raw)}")
    kinds = [key for key in KINDS if key in raw]
    if len(kinds) == 1:
        where = f"{where} ({kinds[0]})"
    for key in raw:
        if key not in NOTIFY_KEYS:
            raise ConfigError(f"{where}: {unknown_key(key, NOTIFY_KEYS)}")
    if not kinds:
        raise ConfigError(f"{where}: give one of {', '.join(KINDS)}")
    if len(kinds) > 1:
        raise ConfigError(f"{where}: has both '{kinds[0]}' and '{kinds[1]}': each item is one channel; make two items")
    kind = kinds[0]
    if "headers" in raw and kind != "webhook":
        raise ConfigError(f"{where}: 'headers' is for a webhook only")
    fields: dict[str, Any] = {
        "number": number,
        "kind": kind,
        "events": _events(raw, where, kind),
        "timeout": check_number(raw, "timeout", where, 10.0, minimum=0.0, inclusive=False),
        "log_tail": _log_tail(raw, where),
    }
    value = raw[kind]
    if kind == "command":
        fields["command"] = _command(value, where, context)
        fields["python"] = context.python
    elif kind in ("webhook", "healthchecks"):
        url = _url(value, where, kind)
        fields["url"] = url.rstrip("/") if kind == "healthchecks" else url
        fields["headers"] = _headers(raw.get("headers"), where)
    elif kind == "email":
        fields["mail"] = _mail(value, where, context.environ)
    else:
        fields["apprise"] = _apprise(value, where)
    return Channel(**fields)


def _events(raw: Mapping[str, Any], where: str, kind: str) -> tuple[str, ...]:
    if kind == "healthchecks":
        if "on" in raw:
            raise ConfigError(
                f"{where}: 'on' does not apply: a Healthchecks check is pinged at every start and end, "
                "which is how it measures runs and notices one that never ended"
            )
        return EVENTS
    value = raw.get("on")
    if value is None:
        return DEFAULT_EVENTS
    events = [value] if isinstance(value, str) else value
    if not isinstance(events, list) or not events:
        what = "an empty list" if events == [] else f"a {kind_of(value)}"
        raise ConfigError(f"{where}: 'on' must be a list of events ({', '.join(EVENTS)}), not {what}")
    for event in events:
        if event not in EVENTS:
            raise ConfigError(f"{where}: 'on': {shown(event)} is not an event (the events are: {', '.join(EVENTS)})")
    return tuple(event for event in EVENTS if event in events)


def _log_tail(raw: Mapping[str, Any], where: str) -> int:
    value = raw.get("log_tail")
    if value is None:
        return 10_000
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LOG_TAIL:
        raise ConfigError(f"{where}: 'log_tail' must be a number of bytes from 0 to {MAX_LOG_TAIL}, not {shown(value)}")
    return int(value)


def _command(value: Any, where: str, context: StepContext) -> tuple[str, ...]:
    """The program and its words: a list (each entry one word) or a line split like a shell would, never run by one."""
    if isinstance(value, str):
        try:
            words = split_arguments([value])
        except ValueError as error:
            raise ConfigError(f"{where}: cannot split 'command': {error}") from None
    elif isinstance(value, list):
        texts = [None if isinstance(entry, bool) else as_written(entry) for entry in value]
        if any(text is None for text in texts):
            raise ConfigError(f"{where}: 'command' must be a list of words (strings or numbers)")
        words = tuple(str(text) for text in texts)
    else:
        raise ConfigError(f"{where}: 'command' must be a list (the program, then its words), not a {kind_of(value)}")
    if not words or not words[0].strip():
        raise ConfigError(f"{where}: 'command' is empty: give the program to run")
    if any("\0" in word for word in words):
        raise ConfigError(f"{where}: 'command' contains a NUL character, which no program can receive")
    return (_program(words[0], where, context), *words[1:])


def _program(program: str, where: str, context: StepContext) -> str:
    """A path (or a .py script) found as a step's script is; a bare name on PATH."""
    if program.endswith(".py") or os.sep in program:
        path = context.lookup.find(program, where)
        if path.endswith(".py"):
            return path
        full = path if os.path.isabs(path) else os.path.join(context.cwd, path)
        if not os.access(full, os.X_OK):
            raise ConfigError(f"{where}: {path} is not executable (chmod +x {path}), and it is not a .py script")
        return path if os.sep in path else os.path.join(os.curdir, path)
    import shutil

    found = shutil.which(program, path=context.environ.get("PATH", os.defpath))
    if found is None:
        raise ConfigError(f"{where}: 'command': {program} is not a command found on PATH")
    return found


def _url(value: Any, where: str, kind: str) -> str:
    # The URL itself is never quoted: it may hold the secret (a Healthchecks check's UUID, a Slack token).
    if not isinstance(value, str) or not _URL.fullmatch(value):
        what = f"a {kind_of(value)}" if not isinstance(value, str) else "something else"
        raise ConfigError(f"{where}: '{kind}' must be an http:// or https:// URL with a host, not {what}")
    return value


def _headers(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'headers' must be a mapping of header names to values, not a {kind_of(value)}")
    headers = []
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{where}: 'headers': {shown(name)} is not a header name")
        written = None if isinstance(text, bool) else as_written(text)
        if written is None or any(char in written for char in "\r\n\0"):
            # The value is not quoted: it is usually a token.
            raise ConfigError(f"{where}: 'headers': the value of {name} must be one line of text")
        headers.append((name, written))
    return tuple(headers)


def _apprise(value: Any, where: str) -> tuple[str, ...]:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise ConfigError(f"{where}: 'apprise' must be an Apprise URL (such as tgram://…) or a list of them")
    for url in urls:
        if not isinstance(url, str) or not _SCHEME_URL.fullmatch(url):
            raise ConfigError(f"{where}: 'apprise' must hold Apprise URLs (such as tgram://… or ntfy://…)")
    if not _installed("apprise"):
        raise ConfigError(
            f'{where}: this channel needs the Apprise library: pip install "lynx-pipeline[apprise]" '
            "(or pip install apprise into Lynx's environment)"
        )
    return tuple(urls)


def _mail(value: Any, where: str, environ: Mapping[str, str]) -> Mail:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: 'email' must be a mapping with 'host' and 'to', not a {kind_of(value)}")
    where = f"{where}: email"
    for key in value:
        if key not in EMAIL_KEYS:
            raise ConfigError(f"{where}: {unknown_key(key, EMAIL_KEYS)}")
    host = value.get("host")
    if host is None:
        raise ConfigError(f"{where}: 'host' is missing: give the SMTP server's name")
    if not isinstance(host, str) or not host.strip() or any(char.isspace() for char in host):
        raise ConfigError(f"{where}: 'host' must be the SMTP server's name, not {shown(host)}")
    to = value.get("to")
    addresses = [to] if isinstance(to, str) else to
    if not isinstance(addresses, list) or not addresses or not all(_address(each) for each in addresses):
        raise ConfigError(f"{where}: 'to' must be an e-mail address or a list of them")
    sender = value.get("from")
    if sender is not None and not _address(sender):
        raise ConfigError(f"{where}: 'from' must be an e-mail address")
    starttls = check_flag(value, "starttls", where, False)
    ssl = check_flag(value, "ssl", where, False)
    if starttls and ssl:
        raise ConfigError(f"{where}: 'starttls' and 'ssl' exclude each other (starttls: port 587; ssl: port 465)")
    port = value.get("port", 465 if ssl else 25)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{where}: 'port' must be a port number from 1 to 65535, not {shown(port)}")
    user = value.get("user")
    password_env = value.get("password_env")
    if user is not None and (not isinstance(user, str) or not user or any(char in user for char in "\r\n\0")):
        raise ConfigError(f"{where}: 'user' must be the SMTP user name (one line of text)")
    if password_env is not None:
        if not isinstance(password_env, str) or not _VARIABLE.fullmatch(password_env):
            raise ConfigError(
                f"{where}: 'password_env' must be the name of the environment variable that holds the password "
                "(never the password itself)"
            )
        if user is None:
            raise ConfigError(f"{where}: 'password_env' needs a 'user' to log in as")
        if password_env not in environ:
            raise ConfigError(f"{where}: 'password_env': the environment variable {password_env} is not set")
    elif user is not None:
        raise ConfigError(f"{where}: 'user' needs 'password_env', the environment variable holding the password")
    return Mail(
        host=host,
        to=tuple(addresses),
        port=int(port),
        starttls=starttls,
        ssl=ssl,
        user=user,
        password_env=password_env,
        sender=sender,
    )


def _address(value: Any) -> bool:
    return (
        isinstance(value, str)
        and "@" in value.strip("@")
        and not any(char.isspace() or char in "<>,;\0" for char in value)
    )


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (Apprise takes a while)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # blocked (sys.modules[module] = None), or half there
        return False
