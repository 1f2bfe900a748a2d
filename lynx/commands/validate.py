"""``lynx validate``: check the config as ``start`` does, then show what would run and when."""

from __future__ import annotations

import dataclasses
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TextIO

from lynx.config import load_pipeline
from lynx.errors import EXIT_OK, ConfigError
from lynx.records import FromEnvironment, Pipeline, Schedule, Step, as_shown, shown_command_line

if TYPE_CHECKING:
    from lynx.selection import Selection

FIRE_TIMES = 5
# Shown by the step's heading and command line instead.
_SHOWN_ELSEWHERE = ("number", "script", "path", "arguments")
_SECONDS = ("timeout", "retry_delay", "misfire_grace_time")
# Shown on the schedule's line (either_day is crontab's own rule, implied by the line).
_SCHEDULE_SHOWN = ("fields", "crontab", "either_day")


def validate(
    config_file: str,
    *,
    overrides: Sequence[str] = (),
    from_: str | None = None,
    until: str | None = None,
    only: Sequence[str] = (),
    python: str = sys.executable,
    stdout: TextIO = sys.stdout,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Load and check ``config_file`` (with ``overrides``) as ``lynx start`` does, SLURM's checks included;
    print each step's command line, whether the selection (``--from``, ``--until``, ``--only``) runs it,
    and the next fire times.

    Raises:
        ConfigError: the same errors as ``lynx start`` (exit 2); nothing runs.
    """
    from lynx.selection import select_steps

    if not os.path.isfile(config_file):
        raise ConfigError(f"the configuration file {config_file} does not exist")
    pipeline = load_pipeline(config_file, overrides=overrides)
    selection = select_steps(pipeline, from_=from_, until=until, only=tuple(only))
    # The same checks as 'lynx start', SLURM's included: what start refuses, validate refuses alike.
    from lynx.launch import check_launchers

    slurm = check_launchers(pipeline, python=python, environ=environ)
    stdout.write("\n".join(describe(pipeline, python=python, selection=selection, slurm=slurm)) + "\n")
    return EXIT_OK


def describe(
    pipeline: Pipeline,
    *,
    python: str,
    now: datetime | None = None,
    selection: Selection | None = None,
    slurm: Mapping[int, str] | None = None,
) -> list[str]:
    """The lines ``lynx validate`` prints for a valid ``pipeline``; ``slurm``: what SLURM said of each SLURM step."""
    count = len(pipeline.steps)
    when = "on a cron schedule (with -ni or -bg)" if pipeline.schedule is not None else "once"
    picked = ""
    if selection is not None:
        chosen = sum(step.number in selection.numbers for step in pipeline.steps)
        picked = f" ({chosen} selected by {selection.said})"
    lines = [f"{pipeline.source} is valid: {count} step{'s' if count != 1 else ''}{picked}, run {when}.", ""]
    for step in pipeline.steps:
        if step.number > 1:
            lines.append("")
        skipped = selection is not None and step.number not in selection.numbers
        lines.append(f"Step {step.number}: {as_shown(step.script)}" + ("  (skipped: not selected)" if skipped else ""))
        lines.append("    " + shown_command_line(step.argv(python)))
        lines += _launch_lines(step, python, pipeline.name, (slurm or {}).get(step.number))
        lines += [f"  {key}: {text}" for key, text in _extra_keys(step, pipeline)]
        if pipeline.parallel and step.needs is None and step.number > 1:
            lines.append(f"  after: {_group_title(pipeline, step.number - 1)} (no 'needs': the step before it)")
    if pipeline.parallel:
        lines.append("")
        lines += plan_lines(pipeline)
    if pipeline.schedule is not None:
        lines.append("")
        lines += _schedule_lines(pipeline.schedule, now)
    if pipeline.channels:
        # Labels only: a channel's URL, headers and user are secrets.
        lines += ["", "Notify:"]
        lines += [
            f"  {channel.number}. {channel.label} on {', '.join(channel.events)}" for channel in pipeline.channels
        ]
    return lines


def _launch_lines(step: Step, python: str, pipeline: str, verdict: str | None) -> list[str]:
    """How the command is launched when not directly: a SLURM step's srun command line and SLURM's verdict."""
    if step.slurm is None:
        return []
    from lynx.slurm import srun_command

    # srun's options are made from the step's values (--job-name from its title, --chdir from its cwd):
    # the line shown is made from those values as written.
    as_written = dataclasses.replace(
        step,
        name=as_shown(step.title),
        cwd=as_shown(step.cwd) if step.cwd is not None else None,
        slurm=tuple((option, value if value is True else as_shown(value)) for option, value in step.slurm),
    )
    shown = srun_command(as_written, pipeline=pipeline, python=python)
    if isinstance(step.path, FromEnvironment):  # made absolute for the job
        shown = [step.path if word == os.path.abspath(step.path) else word for word in shown]
    return ["  runs on SLURM: " + shown_command_line(shown)] + (["  " + verdict] if verdict else [])


def _extra_keys(step: Step, pipeline: Pipeline) -> list[tuple[str, str]]:
    """The step's optional keys that differ from their defaults, in the record's order."""
    shown = []
    for field in dataclasses.fields(step):
        if field.name in _SHOWN_ELSEWHERE:
            continue
        value = getattr(step, field.name)
        if field.default is not dataclasses.MISSING and value == field.default:
            continue
        if field.name == "needs":
            text = ", ".join(_group_title(pipeline, number) for number in value) or "nothing (starts at once)"
        else:
            text = _render(field.name, value)
        shown.append((field.name, text))
    return shown


def plan_lines(pipeline: Pipeline) -> list[str]:
    """Which steps can run together: the waves of the plan, each wave's steps waiting only for earlier waves."""
    from lynx.plan import make_plan, parallel_limit, waves

    plan = make_plan(pipeline)
    limit = parallel_limit(pipeline)
    given = "max_parallel" if pipeline.max_parallel is not None else "the CPUs Lynx may use"
    lines = [f"Plan: at most {limit} step{'s' if limit != 1 else ''} at once ({given}):"]
    for number, wave in enumerate(waves(plan), 1):
        groups = []
        for position in wave:
            title = _group_title(pipeline, plan.numbers[position])
            count = len(plan.members[position])
            groups.append(f"{title} × {count}" if pipeline.steps[plan.members[position][0]].matrix else title)
        lines.append(f"  wave {number}: {', '.join(groups)}")
    return lines


def _group_title(pipeline: Pipeline, number: int) -> str:
    """``Step 2 (train)``: a matrix step by its name or script, without its combination's values."""
    step = next(step for step in pipeline.steps if step.number == number)
    return f"Step {number} ({step.group_title})"


def _render(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        number = str(int(value)) if value == int(value) else repr(value)
        return f"{number} s" if key in _SECONDS else number
    if isinstance(value, tuple) and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        # env: (KEY, value | None); slurm: (option, value | True); matrix: (name, value)
        return ", ".join(_pair(key, name, item) for name, item in value)
    return as_shown(value)


def _pair(key: str, name: str, value: Any) -> str:
    if value is None:
        return f"{name} (removed)"
    if value is True:
        return name
    return f"{name}={as_shown(value)}"


def _schedule_lines(schedule: Schedule, now: datetime | None) -> list[str]:
    """The schedule as given, then its next fire times in its own timezone.

    Raises:
        ConfigError: it has no ``timezone`` and TZ names none (as ``lynx start -ni`` says).
    """
    from lynx.cron import trigger_of

    trigger = trigger_of(schedule)
    fields = list(schedule.fields)
    if schedule.crontab is not None:
        from lynx.cron import crontab_fields

        # The fields the line was translated into are shown as the line itself.
        translated, _ = crontab_fields(schedule.crontab)
        fields = [(key, value) for key, value in fields if key not in translated]
        fields.insert(0, ("crontab", repr(as_shown(schedule.crontab))))
    lines = ["Schedule: " + ", ".join(f"{key}={as_shown(value)}" for key, value in fields)]
    lines += [f"  {key}: {_render(key, value)}" for key, value in _schedule_extras(schedule)]
    jitter = getattr(trigger, "jitter", None)
    if jitter:
        # The listed times are the schedule's own; each run may start up to ``jitter`` later.
        trigger.jitter = None
    zone = trigger.timezone
    lines.append(f"Next {FIRE_TIMES} runs ({zone}{f', each up to {jitter} s later' if jitter else ''}):")
    moment = now.astimezone(zone) if now is not None else datetime.now(zone)
    previous = None
    for _ in range(FIRE_TIMES):
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            lines.append("(no more fire times)")
            break
        lines.append(fire.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"))
        # As the scheduler asks: from the last fire itself (wall-clock arithmetic on it would lose
        # which pass of an hour repeated when clocks go back it was in).
        previous = moment = fire
    return lines


def _schedule_extras(schedule: Schedule) -> list[tuple[str, Any]]:
    """Settings of the schedule beside its trigger fields (misfire grace, coalesce, ...), when set."""
    extras = []
    for field in dataclasses.fields(schedule):
        value = getattr(schedule, field.name)
        if field.name in _SCHEDULE_SHOWN or (field.default is not dataclasses.MISSING and value == field.default):
            continue
        extras.append((field.name, value))
    return extras
