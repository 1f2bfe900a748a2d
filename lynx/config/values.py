"""What a YAML value is to the config's checks: numbers and dates as written, and how errors show a value."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Mapping

from lynx.errors import ConfigError
from lynx.records import MAX_SECONDS, FromEnvironment

# What starts a reference to a matrix value (Lynx's own interpolation, not OmegaConf's).
MATRIX_REF = "${matrix."


class WrittenInt(int):
    """An int that remembers how the file wrote it: YAML 1.1 reads ``010`` as 8 and ``12:30`` as 750."""

    text: str


class WrittenFloat(float):
    """A float that remembers how the file wrote it: YAML 1.1 reads ``3.10`` as 3.1."""

    text: str


class WrittenDate(date):
    """A date that remembers how the file wrote it."""

    text: str


class WrittenDatetime(datetime):
    """A timestamp that remembers how the file wrote it: ``2024-01-01T10:00:00.50Z``, not an ISO rewrite."""

    text: str


WRITTEN = (WrittenInt, WrittenFloat, WrittenDate, WrittenDatetime)


def as_written(value: Any) -> str | None:
    """A scalar as the file wrote it; None for what is not a scalar."""
    if isinstance(value, str):
        return value
    if isinstance(value, WRITTEN):
        return value.text
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    for type_, name in (
        (bool, "boolean"),
        (dict, "mapping"),
        (list, "list"),
        (str, "string"),
        ((int, float), "number"),
    ):
        if isinstance(value, type_):
            return name
    return type(value).__name__


def keep_origin(value: str, source: Any) -> str:
    """``value``, made from ``source``, remembering as ``source`` does whether it came from the environment
    (a path found for a script read from it shows as the script's interpolation)."""
    if isinstance(source, FromEnvironment):
        return FromEnvironment(value, source.written)
    return str(value)


def shown(value: Any) -> str:
    """A value for an error message: short scalars as written, anything else by its kind; a value
    read from the environment as its interpolation, never the value."""
    if isinstance(value, bool):
        return str(value).lower()
    written = value.written if isinstance(value, FromEnvironment) else as_written(value)
    if written is not None and len(written) <= 40 and "\n" not in written:
        return repr(written) if isinstance(value, str) else written
    return f"a {kind_of(value)}"


def unknown_key(key: object, known: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(known)})"
    return f"unknown key '{key}'{hint}"


def check_number(
    raw: Mapping[str, Any], key: str, where: str, default: float | None, *, minimum: float, inclusive: bool = True
) -> Any:
    value = raw.get(key)
    if value is None:
        return default
    # Compared as they are: a 400-digit integer does not fit a float.
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if not (is_number and (value >= minimum if inclusive else value > minimum) and value <= MAX_SECONDS):
        what = "a number" if key == "retry_backoff" else "a number of seconds"
        bound = f"{'at least' if inclusive else 'more than'} {minimum:g} and at most {MAX_SECONDS:g}"
        raise ConfigError(f"{where}: '{key}' must be {what} {bound}, not {shown(value)}")
    return float(value)


def check_whole(raw: Mapping[str, Any], key: str, where: str, default: int, *, minimum: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_SECONDS:
        raise ConfigError(
            f"{where}: '{key}' must be a whole number from {minimum} to {MAX_SECONDS:.0f}, not {shown(value)}"
        )
    return int(value)


def check_flag(raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false, not {shown(value)}")
    return value
