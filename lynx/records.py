"""The frozen records a config becomes (``Step``, ``Schedule``, ``Channel``, ``Pipeline``): what other modules read.

It imports nothing of Lynx's at load time, so that runner, launcher, history and commands depend on
the records and not on the parser that builds them (:mod:`lynx.config`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from lynx.channels import Channel

# A fire that comes at most this many seconds late still runs (APScheduler's misfire grace).
MISFIRE_GRACE = 60
# The longest wait a config may ask for (about 31 years): longer ones overflow the clocks that time them.
MAX_SECONDS = 1e9


class FromEnvironment(str):
    """A config value read from the environment (``${oc.env:…}``, also through another key): it is its
    value wherever Lynx uses it, and ``written``, the text as the file wrote it, wherever Lynx shows the
    config (:func:`as_shown`), so that secrets stay out of screens and CI logs.

    An argument entry splits into words; when its text as written splits into as many, each word
    shows its own part. Otherwise the first word shows the whole entry as written and the others
    show nothing (their ``written`` is empty).
    """

    written: str

    def __new__(cls, value: str, written: str) -> FromEnvironment:
        text = super().__new__(cls, value)
        text.written = written
        return text

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return (str(self), self.written)


def matrix_suffix(pairs: Sequence[tuple[str, str]]) -> str:
    """What a matrix step's title adds to its config step's for one combination: `` (lr=0.1, seed=1)``."""
    return f" ({', '.join(f'{name}={value}' for name, value in pairs)})"


def as_shown(value: Any) -> str:
    """A config value as Lynx shows it: one from the environment as written, any other as its text."""
    return value.written if isinstance(value, FromEnvironment) else str(value)


def shown_words(words: Sequence[str]) -> list[str]:
    """``words`` as Lynx shows (and records) them: a word read from the environment as the file wrote it
    (an entry that split into several words shows once, as a whole)."""
    return [
        word.written if isinstance(word, FromEnvironment) else str(word)
        for word in words
        if not isinstance(word, FromEnvironment) or word.written
    ]


def shown_command_line(words: Sequence[str]) -> str:
    """``words`` as a shell command line (``shlex.join``), except that a word read from the environment
    shows as the file wrote it, unquoted: the text of the file, not the secret the program gets."""
    import shlex

    return " ".join(
        word.written if isinstance(word, FromEnvironment) else shlex.quote(word)
        for word in words
        if not isinstance(word, FromEnvironment) or word.written
    )


@dataclass(frozen=True)
class Step:
    """One step: a script, the words passed to it, and how and where it runs."""

    number: int
    script: str
    path: str
    arguments: tuple[str, ...] = ()
    name: str | None = None
    # Variables set on top of Lynx's environment; a None value removes the variable.
    env: tuple[tuple[str, str | None], ...] = ()
    cwd: str | None = None
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 1.0
    continue_on_error: bool = False
    # The interpreter for a .py script; None: the one running Lynx.
    python: str | None = None
    # srun long options (without dashes) when the step runs as a SLURM job; True gives a bare --option.
    slurm: tuple[tuple[str, str | bool], ...] | None = None
    # The numbers of the steps that must have succeeded first; None: the step before it (as ever).
    needs: tuple[int, ...] | None = None
    # This combination's values (name, value as written) when the step has a ``matrix``.
    matrix: tuple[tuple[str, str], ...] = ()

    @property
    def title(self) -> str:
        """What messages call the step: its name, else its script."""
        return self.name or self.script

    @property
    def label(self) -> str:
        return f"Step {self.number} ({self.title})"

    @property
    def group_title(self) -> str:
        """The config step's title: a matrix step's without its combination's values (``train``)."""
        if not self.matrix:
            return self.title
        suffix = matrix_suffix(self.matrix)
        return self.title[: -len(suffix)] if self.title.endswith(suffix) else self.title

    @property
    def tag(self) -> str:
        """What prefixes the step's output lines when several steps may run at once: ``train lr=0.1 seed=1``."""
        if not self.matrix:
            return self.title
        return " ".join([self.group_title, *(f"{name}={value}" for name, value in self.matrix)])

    def argv(self, python: str) -> tuple[str, ...]:
        """The command line: a .py script with ``python`` (or the step's own), anything else run directly."""
        if self.path.endswith(".py"):
            return (self.python or python, self.path, *self.arguments)
        return (self.path, *self.arguments)

    def retry_wait(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` + 1: ``retry_delay × retry_backoff^(attempt-1)``, at most MAX_SECONDS."""
        if self.retry_delay == 0:
            return 0.0
        try:
            return min(self.retry_delay * self.retry_backoff ** (attempt - 1), MAX_SECONDS)
        except OverflowError:
            return MAX_SECONDS

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with PYTHONUNBUFFERED=1 and the step's own variables."""
        env = {**base, "PYTHONUNBUFFERED": "1"}
        for key, value in self.env:
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env


@dataclass(frozen=True)
class Schedule:
    """When to run: the fields of an APScheduler CronTrigger (a crontab line translated), and how."""

    fields: tuple[tuple[str, Any], ...]
    # The crontab line the fields came from, if any.
    crontab: str | None = None
    # crontab's rule when both the day of the month and the day of the week are restricted: either matches.
    either_day: bool = False
    misfire_grace_time: int = MISFIRE_GRACE
    coalesce: bool = True
    # With -ni/-bg: one run right at start, then the schedule.
    run_on_start: bool = False
    # At start, run once if a fire was missed since the last run (True), or one at most this many seconds old.
    catchup: bool | float = False

    def trigger(self) -> Any:
        """Build the trigger (raises ValueError/TypeError on bad values, lynx.cron.TimezoneError
        when there is no ``timezone`` and TZ names no zone)."""
        # lynx.cron is a leaf (it imports nothing of Lynx's) and brings APScheduler: only schedules load it.
        from lynx.cron import build_trigger

        return build_trigger(dict(self.fields), either_day=self.either_day)


@dataclass(frozen=True)
class Pipeline:
    """A whole config: the file it came from, its steps, its optional schedule and notification channels."""

    source: str
    steps: tuple[Step, ...]
    schedule: Schedule | None = None
    # The ``notify`` items (lynx.channels: loaded only by configs that notify).
    channels: tuple[Channel, ...] = ()
    # At most this many steps at once (top-level ``max_parallel``); None: as many as Lynx may use CPUs.
    max_parallel: int | None = None
    # The config uses ``needs``, ``matrix`` or ``max_parallel``: its summary shows when each step ran.
    parallel: bool = False

    @property
    def name(self) -> str:
        """The config file's name without its extension: the default scheduler name."""
        return os.path.splitext(os.path.basename(self.source))[0]
