"""Cron triggers as people expect them: crontab lines in crontab's own meaning, one fire per
wall-clock time when clocks go back, and a local time zone even under a POSIX ``TZ``.

APScheduler is imported only when a trigger is built.
"""

from __future__ import annotations

import functools
import os
import re
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Mapping, Sequence

CRONTAB_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
# crontab numbers the days from Sunday (0, and 7 again); APScheduler from Monday (0).
CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# A fold spans an hour of fires at most; a trigger firing every second in a restricted hour has 3600.
MAX_SKIPPED_REPEATS = 10_000
# A POSIX TZ without daylight saving rules: a name (or <+09>) and an offset west of UTC.
_POSIX_TZ = re.compile(
    r"^(?P<name>[A-Za-z]{3,}|<[A-Za-z0-9+-]+>)(?P<sign>[+-]?)(?P<h>\d{1,2})(?::(?P<m>\d{2}))?(?::(?P<s>\d{2}))?$"
)


class TimezoneError(ValueError):
    """The machine's local time zone cannot be told from TZ."""


def crontab_fields(line: str) -> tuple[dict[str, str], bool]:
    """A crontab line (5 fields, or 6 with seconds first, or @daily and the like) as CronTrigger fields,
    and whether it restricts both day fields (then crontab fires when either matches: neither starts
    with '*').

    Raises:
        ValueError: naming what is wrong with the line.
    """
    parts = _crontab_parts(line)
    if len(parts) == 5:
        names: Sequence[str] = CRONTAB_FIELDS
    elif len(parts) == 6:
        names = ("second", *CRONTAB_FIELDS)
    else:
        raise ValueError(
            f"a crontab line has 5 fields (minute hour day month day-of-week) or 6 (second first), not {len(parts)}"
        )
    fields = dict(zip(names, parts))
    either_day = not fields["day"].startswith("*") and not fields["day_of_week"].startswith("*")
    fields["day_of_week"] = crontab_weekdays(fields["day_of_week"])
    return fields, either_day


def _crontab_parts(line: str) -> list[str]:
    text = line.strip()
    if text.startswith("@"):
        if text == "@reboot":
            raise ValueError("@reboot is not a schedule: use 'run_on_start: true' beside a schedule")
        if text not in NICKNAMES:
            raise ValueError(f"unknown nickname {text} (known: {', '.join(NICKNAMES)})")
        text = NICKNAMES[text]
    return text.split()


def crontab_weekdays(expression: str) -> str:
    """crontab's day-of-week field (0 and 7 Sunday, names, ranges, steps) as APScheduler day names."""
    days: set[int] = set()
    for item in expression.lower().split(","):
        body, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"day of week {item!r}: the step must be a whole number of at least 1")
            step = int(step_text)
        if body == "*":
            low, high = 0, 7
        elif "-" in body:
            first, _, last = body.partition("-")
            low, high = _crontab_day(first, item), _crontab_day(last, item)
            if high == 0 and low > 0:
                high = 7  # "mon-sun"
            if low > high:
                raise ValueError(f"day of week {item!r}: the range runs backwards")
        else:
            low = _crontab_day(body, item)
            high = 7 if step_text else low
        days.update(day % 7 for day in range(low, high + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(CRONTAB_DAYS[day] for day in sorted(days))


def _crontab_day(token: str, item: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token)
    if token in CRONTAB_DAYS:
        return CRONTAB_DAYS.index(token)
    raise ValueError(f"day of week {item!r}: {token!r} is not a day (0-7, 0 and 7 being Sunday, or sun-sat)")


def local_timezone() -> tzinfo:
    """The machine's time zone (tzlocal, which reads TZ); a POSIX TZ without DST rules (UTC0, JST-9)
    as its fixed offset.

    Raises:
        TimezoneError: when TZ is a rule no zone database entry matches (say, with DST rules).
    """
    from tzlocal import get_localzone

    try:
        return get_localzone()
    except Exception:  # tzlocal raises several types for a TZ it cannot map
        value = os.environ.get("TZ", "")
        match = _POSIX_TZ.match(value)
        if match is None:
            raise TimezoneError(
                f"the local time zone cannot be told from TZ={value!r}: set 'timezone:' in the cron section "
                "(a zone name such as Europe/Berlin, or UTC)"
            ) from None
        west = timedelta(hours=int(match["h"]), minutes=int(match["m"] or 0), seconds=int(match["s"] or 0))
        return timezone(west if match["sign"] == "-" else -west, match["name"].strip("<>"))


def build_trigger(fields: Mapping[str, Any], *, either_day: bool = False) -> Any:
    """The trigger for CronTrigger ``fields``.

    Args:
        fields: CronTrigger keyword arguments (jitter included).
        either_day: fire when the day of the month OR the day of the week matches (crontab's rule when
            both are restricted) instead of when both do.

    Raises:
        ValueError, TypeError: for values CronTrigger refuses; TimezoneError (a ValueError).
    """
    from apscheduler.triggers.cron import CronTrigger

    values = dict(fields)
    jitter = values.pop("jitter", None)
    if values.get("timezone") is None:
        values["timezone"] = local_timezone()
    if either_day:
        triggers = [
            CronTrigger(**{**values, "day_of_week": "*"}),
            CronTrigger(**{**values, "day": "*"}),
        ]
    else:
        triggers = [CronTrigger(**values)]
    return _trigger_class()(triggers, jitter)


@functools.cache
def _trigger_class() -> Any:
    """The trigger class, made on first use so that APScheduler is imported only by schedules."""
    from apscheduler.triggers.base import BaseTrigger

    class WallClockTrigger(BaseTrigger):  # type: ignore[misc]
        """One or more CronTriggers (the earliest fire wins), firing a restricted hour once when clocks go back."""

        def __init__(self, triggers: list[Any], jitter: float | None) -> None:
            self.triggers = triggers
            self.jitter = jitter
            self.timezone = triggers[0].timezone
            self.start_date = triggers[0].start_date
            self.end_date = triggers[0].end_date
            # APScheduler 3 fires "hour: 2, minute: 30" at 02:30 on both sides of the change; cron
            # runs a job with a fixed hour once, and one whose hour starts with '*' in both passes.
            hour = next(field for field in triggers[0].fields if field.name == "hour")
            self.once_per_wall_time = not str(hour).startswith("*")

        def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
            for _ in range(MAX_SKIPPED_REPEATS):
                times = [t.get_next_fire_time(previous_fire_time, now) for t in self.triggers]
                fire = min((time for time in times if time is not None), default=None)
                if fire is None or not (self.once_per_wall_time and _repeats_wall_time(fire)):
                    return self._apply_jitter(fire, self.jitter, now)
                previous_fire_time = now = fire
            return None

        def __str__(self) -> str:
            return " or ".join(str(trigger) for trigger in self.triggers)

    return WallClockTrigger


def _repeats_wall_time(when: datetime) -> bool:
    """``when`` is the second pass of a wall-clock time that the clocks going back repeat."""
    return when.fold == 1 and when.replace(fold=0).utcoffset() != when.utcoffset()


def describe(when: datetime) -> str:
    """A fire time as people read it: weekday, date, wall-clock time and zone."""
    # A time in the hour skipped when clocks go forward is shown as the time it really fires at.
    shown = when.astimezone(timezone.utc).astimezone(when.tzinfo)
    return shown.strftime("%a %Y-%m-%d %H:%M:%S %Z").strip()


def trigger_of(schedule: Any) -> Any:
    """``schedule.trigger()`` (a :class:`lynx.records.Schedule`'s), with a local time zone that cannot be
    told said as the config error it is, as ``lynx start`` (every way) and ``lynx validate`` say it.

    Raises:
        ConfigError: the local time zone cannot be told (a POSIX TZ with DST rules).
    """
    from lynx.errors import ConfigError

    try:
        return schedule.trigger()
    except TimezoneError as error:
        raise ConfigError(f"cron: {error}") from None
