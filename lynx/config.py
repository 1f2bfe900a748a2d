"""Read the YAML config once, check all of it, and turn it into frozen records.

Nothing past this module sees YAML, OmegaConf objects or raw dicts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Mapping

from lynx.errors import ConfigError

TOP_LEVEL_KEYS = ("cron", "configs", "steps", "vars", "python")
STEP_KEYS = (
    "script",
    "arguments",
    "name",
    "env",
    "cwd",
    "timeout",
    "retries",
    "retry_delay",
    "retry_backoff",
    "continue_on_error",
    "python",
    "slurm",
)
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
SCHEDULE_KEYS = ("crontab", "misfire_grace_time", "coalesce", "run_on_start")
CRON_KEYS = CRON_FIELDS + SCHEDULE_KEYS
# The trigger fields that may stand beside a crontab line (the other SCHEDULE_KEYS may too).
BESIDE_CRONTAB = ("timezone", "start_date", "end_date", "jitter")
# A fire that comes at most this many seconds late still runs (APScheduler's misfire grace).
MISFIRE_GRACE = 60
# An honest config is far below both; a YAML "billion laughs" bomb is far above the second.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_EXPANDED_NODES = 2_000_000
MAX_INTERPOLATED_NODES = 200_000
# The longest wait a config may ask for (about 31 years): longer ones overflow the clocks that time them.
MAX_SECONDS = 1e9

# Arguments without quotes, backslashes or white space other than " \t\r\n" split the same with str.split,
# which is much faster than shlex on configs with thousands of steps.
_NEEDS_SHLEX = re.compile(r"['\"\\]|[^\S \t\r\n]")


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

    @property
    def title(self) -> str:
        """What messages call the step: its name, else its script."""
        return self.name or self.script

    @property
    def label(self) -> str:
        return f"Step {self.number} ({self.title})"

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

    def trigger(self) -> Any:
        """Build the trigger (raises ValueError/TypeError on bad values, lynx.cron.TimezoneError
        when there is no ``timezone`` and TZ names no zone)."""
        from lynx.cron import build_trigger

        return build_trigger(dict(self.fields), either_day=self.either_day)


@dataclass(frozen=True)
class Pipeline:
    """A whole config: the file it came from, its steps and its optional schedule."""

    source: str
    steps: tuple[Step, ...]
    schedule: Schedule | None = None

    @property
    def name(self) -> str:
        """The config file's name without its extension: the default scheduler name."""
        return os.path.splitext(os.path.basename(self.source))[0]


def load_pipeline(
    path: str | os.PathLike[str], *, cwd: str | None = None, environ: Mapping[str, str] = os.environ
) -> Pipeline:
    """Read, check and convert the config file at ``path``.

    Args:
        path: the YAML file.
        cwd: where relative script paths are looked up first (default: the current directory).
        environ: whose PATH finds a ``python`` given as a command name.

    Raises:
        ConfigError: for anything wrong with the file, naming the step and field.
    """
    source = os.fspath(path)
    document = _read_yaml(source)
    return _build_pipeline(document, source, cwd or os.getcwd(), environ)


def split_arguments(entries: list[Any] | tuple[Any, ...]) -> tuple[str, ...]:
    """Split each entry like a shell splits words, without running a shell."""
    words: list[str] = []
    for entry in entries:
        text = str(entry)
        if not _NEEDS_SHLEX.search(text):
            words.extend(text.split())
        else:
            import shlex

            words.extend(shlex.split(text))
    return tuple(words)


class _WrittenInt(int):
    """An int that remembers how the file wrote it: YAML 1.1 reads ``010`` as 8 and ``12:30`` as 750."""

    text: str


class _WrittenFloat(float):
    """A float that remembers how the file wrote it: YAML 1.1 reads ``3.10`` as 3.1."""

    text: str


class _WrittenDate(date):
    """A date that remembers how the file wrote it."""

    text: str


class _WrittenDatetime(datetime):
    """A timestamp that remembers how the file wrote it: ``2024-01-01T10:00:00.50Z``, not an ISO rewrite."""

    text: str


_WRITTEN = (_WrittenInt, _WrittenFloat, _WrittenDate, _WrittenDatetime)


def _loader(yaml: Any) -> Any:
    """libyaml's safe loader, refusing duplicate keys and steps merged into one, keeping numbers' text."""
    from yaml.constructor import ConstructorError
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    flatten = base.flatten_mapping

    class Loader(base):  # type: ignore[misc, valid-type]
        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self.flattened: set[int] = set()

        def flatten_mapping(self, node: Any) -> None:
            # Merging rewrites node.value in place: look at each mapping once, as it was written;
            # flattened once, a mapping has no merge keys left (a merged anchor is flattened again
            # for every step that merges it).
            if id(node) in self.flattened:
                return
            self.check_keys(node)
            flatten(self, node)
            self.flattened.add(id(node))

        def check_keys(self, node: Any) -> None:
            seen: dict[tuple[str, str], Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                    for item in merged:
                        if isinstance(item, MappingNode):
                            self.flatten_mapping(item)  # its own merges first: what it holds after them counts
                    if len(merged) > 1:
                        steps = [
                            item
                            for item in merged
                            if isinstance(item, MappingNode)
                            and any(isinstance(k, ScalarNode) and k.value == "script" for k, _ in item.value)
                        ]
                        if len(steps) > 1:
                            raise ConstructorError(
                                None,
                                None,
                                f"'<<' merges a list of {len(steps)} steps into one step, which would keep only "
                                "the first; merge each step on its own (- <<: *name for each), or name the "
                                "'configs' entry in 'steps' (steps: [name])",
                                key_node.start_mark,
                            )
                if not isinstance(key_node, ScalarNode):
                    continue
                key = (key_node.tag, key_node.value)
                first = seen.get(key)
                if first is not None:
                    merge = key_node.tag == "tag:yaml.org,2002:merge"
                    hint = "merge several with one list: <<: [*a, *b]" if merge else "YAML would keep only the last"
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key '{key_node.value}' (first at line {first.start_mark.line + 1}); {hint}",
                        key_node.start_mark,
                    )
                seen[key] = key_node

        def construct_yaml_int(self, node: Any) -> int:
            number = _WrittenInt(super().construct_yaml_int(node))
            number.text = node.value
            return number

        def construct_yaml_float(self, node: Any) -> float:
            number = _WrittenFloat(super().construct_yaml_float(node))
            number.text = node.value
            return number

        def construct_yaml_timestamp(self, node: Any) -> date:
            value = super().construct_yaml_timestamp(node)
            if isinstance(value, datetime):
                fields = (value.year, value.month, value.day, value.hour, value.minute, value.second)
                written: date = _WrittenDatetime(*fields, value.microsecond, value.tzinfo)
            else:
                written = _WrittenDate(value.year, value.month, value.day)
            written.text = node.value  # type: ignore[attr-defined]
            return written

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)
    Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.construct_yaml_timestamp)
    return Loader


def _read_yaml(source: str) -> Any:
    import yaml

    try:
        size = os.path.getsize(source)
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source}: the file is {size} bytes; a config may have at most {MAX_CONFIG_BYTES}")
        with open(source, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ConfigError(f"{source}: cannot read the config file: {error.strerror or error}") from None
    try:
        document = yaml.load(raw, Loader=_loader(yaml))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = error.problem or error.context or "invalid YAML"
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as error:
        # PyYAML's reader errors (bad UTF-8, control characters) span two lines: keep the first.
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{source}: invalid YAML: {first_line}") from None
    # OmegaConf builds an object for every expanded node: a far smaller expansion is already too much.
    interpolates = b"${" in raw
    limit = MAX_INTERPOLATED_NODES if interpolates else MAX_EXPANDED_NODES
    try:
        if isinstance(document, (dict, list)):
            _expanded_size(document, {}, set(), limit)
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None
    except _AliasCycleError:
        raise ConfigError(f"{source}: invalid YAML: an alias refers to a node that contains it") from None
    except _AliasBombError:
        raise ConfigError(
            f"{source}: the YAML aliases expand to more than {limit} nodes; refusing to load it"
        ) from None
    # Only configs that use interpolation pay for OmegaConf.
    if interpolates:
        document = _resolve_interpolations(document, source)
    return document


class _AliasCycleError(Exception):
    pass


class _AliasBombError(Exception):
    pass


def _expanded_size(node: Any, sizes: dict[int, int], on_path: set[int], limit: int) -> int:
    """How many nodes a walk over ``node`` would visit, computed once per shared object.

    YAML aliases share objects, so the loaded graph stays small while its expansion (what any
    walk over it sees, OmegaConf's included) can be astronomically large: a "billion laughs" bomb.
    """
    key = id(node)
    size = sizes.get(key)
    if size is not None:
        return size
    if key in on_path:
        raise _AliasCycleError
    on_path.add(key)
    total = 1
    for child in node.values() if type(node) is dict else node:
        if type(child) is dict or type(child) is list:
            total += _expanded_size(child, sizes, on_path, limit)
        else:
            total += 1
    on_path.discard(key)
    if total > limit:
        raise _AliasBombError
    sizes[key] = total
    return total


def _resolve_interpolations(document: Any, source: str) -> Any:
    """Resolve OmegaConf ``${...}`` interpolations; only configs that use them pay for OmegaConf.

    OmegaConf takes only plain values, so numbers and dates go through it as placeholders and come
    back as the very objects the file made: a ``${vars.n}`` that stands alone is that number, one
    inside a string is the number's text as written (``python${vars.py}`` with ``py: 3.10``:
    ``python3.10``, where YAML 1.1 would say 3.1).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    written: list[Any] = []
    # A mark no string of the file can hold by chance (a NUL and random digits).
    mark = f"\0{os.urandom(8).hex()}:"
    placeholder = re.compile(re.escape(mark) + "([0-9]+)\0")

    def hide(node: Any) -> Any:
        if isinstance(node, dict):
            return {hide(key): hide(value) for key, value in node.items()}
        if isinstance(node, list):
            return [hide(value) for value in node]
        if isinstance(node, _WRITTEN):
            written.append(node)
            return f"{mark}{len(written) - 1}\0"
        return node

    def restore(node: Any) -> Any:
        if isinstance(node, dict):
            return {restore(key): restore(value) for key, value in node.items()}
        if isinstance(node, list):
            return [restore(value) for value in node]
        if isinstance(node, str) and mark in node:
            alone = placeholder.fullmatch(node)
            if alone:
                return written[int(alone[1])]
            return placeholder.sub(lambda match: written[int(match[1])].text, node)
        return node

    try:
        return restore(OmegaConf.to_container(OmegaConf.create(hide(document)), resolve=True))
    except OmegaConfBaseException as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        where = _interpolation_key(error, document)
        raise ConfigError(f"{source}: {where}cannot resolve an interpolation: {message}") from None


def _interpolation_key(error: Any, document: Any) -> str:
    """Where an interpolation failed, as the other errors say it: ``step 2 (train.py): env.A: ``."""
    key = getattr(error, "full_key", None)
    if not key:
        return ""
    match = re.match(r"steps\[([0-9]+)\]\.?(.*)", str(key))
    if match is None:
        return f"{key}: "
    number = int(match[1]) + 1
    steps = document.get("steps") if isinstance(document, dict) else None
    raw = steps[number - 1] if isinstance(steps, list) and number <= len(steps) else None
    script = raw.get("script") if isinstance(raw, dict) else None
    where = f"step {number} ({script})" if isinstance(script, str) else f"step {number}"
    return f"{where}: {match[2]}: " if match[2] else f"{where}: "


def _unknown_key(key: object, known: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(known)})"
    return f"unknown key '{key}'{hint}"


def _build_pipeline(document: Any, source: str, cwd: str, environ: Mapping[str, str] = os.environ) -> Pipeline:
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {_kind(document)}"
        raise ConfigError(f"{source}: the config must be a mapping with a 'steps' list, but the file is {kind}")
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{source}: {_unknown_key(key, TOP_LEVEL_KEYS)}")
    raw_steps = document.get("steps")
    if raw_steps is None:
        raise ConfigError(f"{source}: 'steps' is missing: list the steps to run under 'steps:'")
    if not isinstance(raw_steps, list):
        raise ConfigError(f"{source}: 'steps' must be a list of steps, not a {_kind(raw_steps)}")
    if not raw_steps:
        raise ConfigError(f"{source}: 'steps' is empty: there is nothing to run")
    variables = document.get("vars")
    if variables is not None and not isinstance(variables, dict):
        raise ConfigError(f"{source}: 'vars' must be a mapping of names to values, not a {_kind(variables)}")
    context = _StepContext(source, cwd, environ)
    python = document.get("python")
    if python is not None:
        context.python = context.interpreter(python, f"{source}: 'python'")
    if any(isinstance(raw, str) for raw in raw_steps):
        raw_steps = _expand_named_steps(raw_steps, document.get("configs"), source)
    steps = tuple(_build_step(number, raw, context) for number, raw in enumerate(raw_steps, 1))
    schedule = _build_schedule(document["cron"], source) if "cron" in document else None
    return Pipeline(source=source, steps=steps, schedule=schedule)


def _expand_named_steps(raw_steps: list[Any], configs: Any, source: str) -> list[Any]:
    """Replace each plain string in ``steps`` by the ``configs`` entry of that name (one step or a list)."""
    named: dict[str, Any] = {}
    if isinstance(configs, dict):
        named = {str(name): value for name, value in configs.items()}
    elif isinstance(configs, list):
        for position, entry in enumerate(configs, 1):
            if isinstance(entry, dict) and len(entry) == 1:
                name, value = next(iter(entry.items()))
                if str(name) in named:
                    raise ConfigError(
                        f"{source}: 'configs' entry {position} is named '{name}' again: a named step needs one entry"
                    )
                named[str(name)] = value
    expanded: list[Any] = []
    for raw in raw_steps:
        if not isinstance(raw, str):
            expanded.append(raw)
            continue
        where = f"{source}: step {len(expanded) + 1}"
        if raw not in named:
            known = f"the known names are: {', '.join(named)}" if named else "'configs' names no entries"
            raise ConfigError(
                f"{where}: a step must be a mapping with a 'script', or the name of a 'configs' entry; "
                f"'{raw}' is neither ({known})"
            )
        value = named[raw]
        if isinstance(value, dict):
            expanded.append(value)
        elif isinstance(value, list) and value:
            expanded.extend(value)
        else:
            raise ConfigError(
                f"{where} ({raw}): the 'configs' entry '{raw}' must be a step (a mapping with a 'script') "
                f"or a list of steps, not a {_kind(value)}"
            )
    return expanded


class _StepContext:
    """What every step is built with: the file, where scripts and interpreters are found, and caches."""

    def __init__(self, source: str, cwd: str, environ: Mapping[str, str]) -> None:
        self.source = source
        self.cwd = cwd
        self.config_dir = os.path.dirname(source)
        self.environ = environ
        self.lookup = _ScriptLookup(cwd, self.config_dir)
        # The split of argument lists that merge keys share between steps.
        self.words: dict[int, tuple[str, ...]] = {}
        self.interpreters: dict[str, str] = {}
        self.executable: dict[str, bool] = {}
        self.python: str | None = None

    def interpreter(self, value: Any, where: str) -> str:
        """The absolute path of a ``python`` given as a path or as a command on PATH."""
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where} must be the path or command name of a Python interpreter, not a {_kind(value)}")
        found = self.interpreters.get(value)
        if found is not None:
            return found
        path = os.path.expanduser(value)
        if os.sep in path:
            candidates = (
                [path] if os.path.isabs(path) else [os.path.join(self.cwd, path), os.path.join(self.config_dir, path)]
            )
            found = next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)
            if found is None:
                raise ConfigError(f"{where}: {value} is not an executable file")
            found = os.path.abspath(found)
        else:
            import shutil

            found = shutil.which(path, path=self.environ.get("PATH", os.defpath))
            if found is None:
                raise ConfigError(f"{where}: {value} is not a command found on PATH")
            found = os.path.abspath(found)
        self.interpreters[value] = found
        return found

    def directory(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: 'cwd' must be the path of a directory, not a {_kind(value)}")
        path = os.path.join(self.cwd, self.config_dir, os.path.expanduser(value))
        if not os.path.isdir(path):
            raise ConfigError(f"{where}: 'cwd': {os.path.abspath(path)} is not a directory")
        return os.path.abspath(path)


def _build_step(number: int, raw: Any, context: _StepContext) -> Step:
    """One step, every key checked; the error names the step by number and script."""
    source = context.source
    where = f"{source}: step {number}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a step must be a mapping with a 'script', not a {_kind(raw)}")
    script = raw.get("script")
    if isinstance(script, str) and script.strip():
        where = f"{where} ({script})"
    for key in raw:
        if key not in STEP_KEYS:
            raise ConfigError(f"{where}: {_unknown_key(key, STEP_KEYS)}")
    if script is None:
        raise ConfigError(f"{where}: 'script' is missing")
    if not isinstance(script, str) or not script.strip():
        raise ConfigError(f"{where}: 'script' must be the path of a Python file, not a {_kind(script)}")
    arguments = _build_arguments(raw.get("arguments"), where, context.words)
    if len(raw) == 1 or (len(raw) == 2 and "arguments" in raw):
        # The common case, as fast as before: a script and its arguments.
        return Step(
            number=number,
            script=script,
            path=_script_path(script, where, context, None),
            arguments=arguments,
            python=context.python,
        )
    name = raw.get("name")
    if name is not None:
        name = _text(name)
        if name is None or not name.strip() or "\n" in name:
            raise ConfigError(f"{where}: 'name' must be one line of text, not a {_kind(raw['name'])}")
    cwd = raw.get("cwd")
    if cwd is not None:
        cwd = context.directory(cwd, where)
    python = raw.get("python")
    if python is not None and not script.endswith(".py"):
        raise ConfigError(f"{where}: 'python' is the interpreter of .py scripts; {script} is run directly")
    python = context.interpreter(python, f"{where}: 'python'") if python is not None else context.python
    timeout = _number(raw, "timeout", where, None, minimum=0.0, inclusive=False)
    retry_delay = _number(raw, "retry_delay", where, 0.0, minimum=0.0)
    retry_backoff = _number(raw, "retry_backoff", where, 1.0, minimum=0.0, inclusive=False)
    retries = _whole(raw, "retries", where, 0, minimum=0)
    continue_on_error = _flag(raw, "continue_on_error", where, False)
    return Step(
        number=number,
        script=script,
        path=_script_path(script, where, context, cwd),
        arguments=arguments,
        name=name,
        env=_build_env(raw.get("env"), where),
        cwd=cwd,
        timeout=timeout,
        retries=retries,
        retry_delay=retry_delay,
        retry_backoff=retry_backoff,
        continue_on_error=continue_on_error,
        python=python,
        slurm=_build_slurm(raw, where),
    )


def _script_path(script: str, where: str, context: _StepContext, cwd: str | None) -> str:
    """Where the step's script is, as the step's process will be able to find it."""
    path = context.lookup.find(script, where)
    if cwd is not None and not os.path.isabs(path):
        # The step runs elsewhere: its script must not depend on Lynx's working directory.
        path = os.path.normpath(os.path.join(context.cwd, path))
    if path.endswith(".py"):
        return path
    if not os.path.isabs(path) and os.sep not in path:
        # A bare name would be looked up on PATH, not here.
        path = os.path.join(os.curdir, path)
    executable = context.executable.get(path)
    if executable is None:
        executable = context.executable[path] = os.access(
            path if os.path.isabs(path) else os.path.join(context.cwd, path), os.X_OK
        )
    if not executable:
        raise ConfigError(
            f"{where}: {path} is not executable: a script that is not a .py file is run directly "
            f"(its #! line decides how); make it executable (chmod +x {path})"
        )
    return path


def _build_arguments(entries: Any, where: str, words: dict[int, tuple[str, ...]]) -> tuple[str, ...]:
    """The step's words from a list (each entry split like a shell would) or a mapping (--key value)."""
    if entries is None:
        return ()
    arguments = words.get(id(entries))
    if arguments is not None:
        return arguments
    if isinstance(entries, dict):
        arguments = words[id(entries)] = _mapping_arguments(entries, where)
    elif isinstance(entries, list):
        texts = []
        for position, entry in enumerate(entries, 1):
            text = None if isinstance(entry, bool) else _text(entry)
            if text is None:
                raise ConfigError(f"{where}: 'arguments' entry {position} must be a string, not a {_kind(entry)}")
            texts.append(text)
        try:
            arguments = words[id(entries)] = split_arguments(texts)
        except ValueError as error:
            raise ConfigError(f"{where}: cannot split 'arguments': {error}") from None
    else:
        raise ConfigError(
            f"{where}: 'arguments' must be a list of strings or a mapping of options, not a {_kind(entries)}"
        )
    if any("\0" in word for word in arguments):
        raise ConfigError(f"{where}: 'arguments' contain a NUL character, which no program can receive")
    return arguments


def _mapping_arguments(entries: dict[Any, Any], where: str) -> tuple[str, ...]:
    """``{input_file: x, n: 5, flag: true, bare: null}`` -> ``--input_file x --n 5 --flag True --bare``."""
    words: list[str] = []
    for key, value in entries.items():
        option = _text(key)
        if option is None or not option.strip():
            raise ConfigError(f"{where}: 'arguments' keys must be option names, not a {_kind(key)}")
        words.append(f"--{option}")
        if value is None:
            continue
        # str(True) is "True", which fire reads as a boolean.
        text = str(value) if isinstance(value, bool) else _text(value)
        if text is None:
            raise ConfigError(
                f"{where}: 'arguments' value of '{option}' must be a string, number, true/false or null, "
                f"not a {_kind(value)}"
            )
        words.append(text)
    return tuple(words)


def _build_env(raw: Any, where: str) -> tuple[tuple[str, str | None], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'env' must be a mapping of variable names to values, not a {_kind(raw)}")
    env: list[tuple[str, str | None]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ConfigError(f"{where}: 'env': {_shown(key)} is not a variable name")
        if value is None:
            env.append((key, None))
            continue
        text = None if isinstance(value, bool) else _text(value)
        if text is None:
            raise ConfigError(
                f"{where}: 'env': {key} must be a string, a number or null (to remove it), not {_shown(value)}"
                + (" (quote it: 'true')" if isinstance(value, bool) else "")
            )
        if "\0" in text:
            raise ConfigError(f"{where}: 'env': {key} contains a NUL character")
        env.append((key, text))
    return tuple(env)


def _build_slurm(raw: Mapping[str, Any], where: str) -> tuple[tuple[str, str | bool], ...] | None:
    """The step's ``slurm:`` options (srun long options without dashes), or None to run it here.

    ``{}`` or ``true`` take the cluster's defaults; ``false`` or null run the step here. An
    option set to ``true`` is a bare ``--option``, ``false`` leaves it out.
    """
    value = raw.get("slurm")
    if value is None or value is False:
        return None
    if value is True:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: 'slurm' must be a mapping of srun options (or true for the defaults), not a {_kind(value)}"
        )
    from lynx.slurm import option_problem

    options: list[tuple[str, str | bool]] = []
    for key, option_value in value.items():
        problem = option_problem(str(key))
        if problem is not None:
            raise ConfigError(f"{where}: slurm: {problem}")
        if option_value is False:
            continue
        if option_value is True:
            options.append((str(key), True))
        elif (text := _text(option_value)) is not None:
            if not text or "\0" in text or "\n" in text:
                raise ConfigError(f"{where}: slurm: '{key}' must be a non-empty single-line value")
            options.append((str(key), text))
        else:
            hint = " (give a value, or true for a bare --option)" if option_value is None else ""
            raise ConfigError(f"{where}: slurm: '{key}' must be a string or number, not a {_kind(option_value)}{hint}")
    return tuple(options)


def _number(
    raw: Mapping[str, Any], key: str, where: str, default: float | None, *, minimum: float, inclusive: bool = True
) -> Any:
    value = raw.get(key)
    if value is None:
        return default
    # Compared as they are: a 400-digit integer does not fit a float.
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if not (number and (value >= minimum if inclusive else value > minimum) and value <= MAX_SECONDS):
        what = "a number" if key == "retry_backoff" else "a number of seconds"
        bound = f"{'at least' if inclusive else 'more than'} {minimum:g} and at most {MAX_SECONDS:g}"
        raise ConfigError(f"{where}: '{key}' must be {what} {bound}, not {_shown(value)}")
    return float(value)


def _text(value: Any) -> str | None:
    """A scalar as the file wrote it; None for what is not a scalar."""
    if isinstance(value, str):
        return value
    if isinstance(value, _WRITTEN):
        return value.text
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _shown(value: Any) -> str:
    """A value for an error message: short scalars as written, anything else by its kind."""
    if isinstance(value, bool):
        return str(value).lower()
    text = _text(value)
    if text is not None and len(text) <= 40 and "\n" not in text:
        return repr(text) if isinstance(value, str) else text
    return f"a {_kind(value)}"


class _ScriptLookup:
    """Find scripts in the current directory first, then in the config file's directory."""

    def __init__(self, cwd: str, config_dir: str) -> None:
        self.cwd = cwd
        self.config_dir = config_dir
        self.found: dict[str, str] = {}

    def find(self, script: str, where: str) -> str:
        path = self.found.get(script)
        if path is None:
            path = self._search(script, where)
            # The interpreter would take "-name.py" for an option.
            path = self.found[script] = os.path.join(os.curdir, path) if path.startswith("-") else path
        return path

    def _search(self, script: str, where: str) -> str:
        path = os.path.expanduser(script)
        if os.path.isabs(path):
            if os.path.isfile(path):
                return path
            raise ConfigError(f"{where}: script not found: {path}")
        if os.path.isfile(os.path.join(self.cwd, path)):
            return path
        beside_config = os.path.join(self.config_dir, path)
        if os.path.isfile(beside_config):
            return beside_config
        looked = f"{os.path.join(self.cwd, path)} and {os.path.abspath(beside_config)}"
        raise ConfigError(f"{where}: script not found (looked in {looked})")


def _build_schedule(raw: Any, source: str) -> Schedule:
    if not isinstance(raw, dict):
        hint = " (for a crontab line write crontab: '...' under cron:)" if isinstance(raw, str) else ""
        raise ConfigError(f"{source}: 'cron' must be a mapping of CronTrigger fields, not a {_kind(raw)}{hint}")
    if not raw:
        raise ConfigError(f"{source}: 'cron' is empty: give at least one field, e.g. second: '*/10'")
    for key in raw:
        if key not in CRON_KEYS:
            raise ConfigError(f"{source}: cron: {_unknown_key(key, CRON_KEYS)}")
    where = f"{source}: cron"
    options: dict[str, Any] = {
        "misfire_grace_time": _whole(raw, "misfire_grace_time", where, MISFIRE_GRACE, minimum=1),
        "coalesce": _flag(raw, "coalesce", where, True),
        "run_on_start": _flag(raw, "run_on_start", where, False),
    }
    jitter = _number(raw, "jitter", where, None, minimum=0.0)
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
                f"{where}: 'crontab' must be a crontab line such as '*/10 * * * *', not a {_kind(crontab)}"
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
    if isinstance(value, (_WrittenInt, _WrittenFloat)):
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return value


def _whole(raw: Mapping[str, Any], key: str, where: str, default: int, *, minimum: int) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_SECONDS:
        raise ConfigError(
            f"{where}: '{key}' must be a whole number from {minimum} to {MAX_SECONDS:.0f}, not {_shown(value)}"
        )
    return int(value)


def _flag(raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false, not {_shown(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "boolean"), (dict, "mapping"), (list, "list"), (str, "string"), ((int, float), "number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__
