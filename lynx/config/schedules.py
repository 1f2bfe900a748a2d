"""Building and checking a config's ``cron`` section: its fields or crontab line, its options, its first fire."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

from lynx.config.values import (
    WrittenFloat,
    WrittenInt,
    check_flag,
    check_number,
    check_whole,
    kind_of,
    shown,
    unknown_key,
)
from lynx.errors import ConfigError
from lynx.records import MAX_SECONDS, MISFIRE_GRACE, Schedule

CRON_FIELDS = (
    "year",
    "month",
    "day",
    "week",
    "day_of_week",
    "hour",
    "minute",
    "second",
    "start_date",
    "end_date",
    "timezone",
    "jitter",
)
# What else a cron section may hold, and what may stand beside a crontab line.
SCHEDULE_KEYS = ("crontab", "misfire_grace_time", "coalesce", "run_on_start", "catchup")
CRON_KEYS = CRON_FIELDS + SCHEDULE_KEYS
# The trigger fields that may stand beside a crontab line (the other SCHEDULE_KEYS may too).
BESIDE_CRONTAB = ("timezone", "start_date", "end_date", "jitter")


def build_schedule(raw: Any, source: str) -> Schedule:
    """The ``cron`` section as a Schedule, its first fire found (or why it never fires said).

    Raises:
        ConfigError: naming the field.
    """
    if not isinstance(raw, dict):
        hint = " (for a crontab line write crontab: '...' under cron:)" if isinstance(raw, str) else ""
        raise ConfigError(f"{source}: 'cron' must be a mapping of CronTrigger fields, not a {kind_of(raw)}{hint}")
    if not raw:
        raise ConfigError(f"{source}: 'cron' is empty: give at least one field, e.g. second: '*/10'")
    for key in raw:
        if key not in CRON_KEYS:
            raise ConfigError(f"{source}: cron: {unknown_key(key, CRON_KEYS)}")
    where = f"{source}: cron"
    options: dict[str, Any] = {
        "misfire_grace_time": check_whole(raw, "misfire_grace_time", where, MISFIRE_GRACE, minimum=1),
        "coalesce": check_flag(raw, "coalesce", where, True),
        "run_on_start": check_flag(raw, "run_on_start", where, False),
        "catchup": _catchup(raw.get("catchup"), where),
    }
    jitter = check_number(raw, "jitter", where, None, minimum=0.0)
    fields = {str(key): _cron_value(value) for key, value in raw.items() if key in CRON_FIELDS}
    if jitter is not None:
        fields["jitter"] = jitter
    crontab = raw.get("crontab")
    either_day = False
    if crontab is not None:
        from lynx.cron import crontab_fields

        beside = [key for key in fields if key not in BESIDE_CRONTAB]
        if beside:
            raise ConfigError(
                f"{where}: '{beside[0]}' cannot stand beside 'crontab' (write it in the crontab line; "
                f"beside it may stand only {', '.join(BESIDE_CRONTAB + SCHEDULE_KEYS[1:])})"
            )
        if not isinstance(crontab, str):
            raise ConfigError(
                f"{where}: 'crontab' must be a crontab line such as '*/10 * * * *', not a {kind_of(crontab)}"
            )
        try:
            translated, either_day = crontab_fields(crontab)
        except ValueError as error:
            raise ConfigError(f"{where}: crontab {crontab!r}: {error}") from None
        where = f"{where}: crontab {crontab!r}"
        fields = {**translated, **fields}
    elif not fields:
        raise ConfigError(f"{where}: give the schedule's fields (e.g. second: '*/10') or a crontab line")
    schedule = Schedule(fields=tuple(fields.items()), crontab=crontab, either_day=either_day, **options)
    _check_fires(schedule, where)
    return schedule


def _check_fires(schedule: Schedule, where: str) -> None:
    """Build the trigger and find its first fire, or say why it never fires."""
    from lynx.cron import TimezoneError

    try:
        try:
            trigger = schedule.trigger()
        except TimezoneError:
            # Only a schedule needs the local time zone (it says so when it starts); check the rest in UTC.
            trigger = replace(schedule, fields=(*schedule.fields, ("timezone", "UTC"))).trigger()
        # Computing a fire time also checks what building the trigger does not.
        now = datetime.now(trigger.timezone)
        first = trigger.get_next_fire_time(None, now)
    except Exception as error:  # APScheduler raises several types
        # Some of APScheduler's and tzlocal's messages span lines (some with a literal backslash-n): keep the first.
        first_line = str(error).replace("\\n", "\n").splitlines()[0].strip() if str(error) else type(error).__name__
        raise ConfigError(f"{where}: {_culprit(schedule)}{first_line}") from None
    if first is not None:
        return
    if trigger.end_date is not None and trigger.end_date < now:
        raise ConfigError(f"{where}: the schedule never fires: its end_date ({trigger.end_date}) is in the past")
    dates = [
        f"{name}: {value}" for name, value in schedule.fields if name in ("year", "month", "day", "week", "day_of_week")
    ]
    raise ConfigError(
        f"{where}: the schedule never fires: no date matches {', '.join(dates) or 'its fields'} "
        "(such dates never exist, or are all past or after end_date)"
    )


def _culprit(schedule: Schedule) -> str:
    """Name the field whose value the trigger refused, when one alone is enough to refuse it."""
    for name, value in schedule.fields:
        try:
            trigger = Schedule(
                fields=((name, value), ("timezone", "UTC")) if name != "timezone" else ((name, value),)
            ).trigger()
            trigger.get_next_fire_time(None, datetime.now(trigger.timezone))
        except Exception:  # APScheduler raises several types
            return f"{name}: {value!r}: "
    return ""


def _cron_value(value: Any) -> Any:
    """A cron field's value as CronTrigger takes it: numbers as YAML reads them, dates as ISO text."""
    if isinstance(value, (WrittenInt, WrittenFloat)):
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return value


def _catchup(value: Any, where: str) -> bool | float:
    """``catchup``: true (any fire missed since the last run), false, or seconds (only a fire that recent)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)) and value == value and 0 < value <= MAX_SECONDS:
        return float(value)
    raise ConfigError(
        f"{where}: 'catchup' must be true, false or a number of seconds more than 0 (a missed fire at most that "
        f"old runs once at start), not {shown(value)}"
    )
