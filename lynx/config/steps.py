"""Building and checking one step: each step key's rules, where its script and interpreter are found."""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, Mapping

from lynx.config.values import (
    as_written,
    check_flag,
    check_number,
    check_whole,
    keep_origin,
    kind_of,
    shown,
    unknown_key,
)
from lynx.errors import ConfigError
from lynx.records import FromEnvironment, Step

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
    "needs",
    "matrix",
)
# Keys about other steps, or about several steps made from one: read by lynx.config.pipeline, not by a rule.
PIPELINE_KEYS = ("needs", "matrix")

# Arguments without quotes, backslashes or white space other than " \t\r\n" split the same with str.split,
# which is much faster than shlex on configs with thousands of steps.
_NEEDS_SHLEX = re.compile(r"['\"\\]|[^\S \t\r\n]")


def split_arguments(entries: list[Any] | tuple[Any, ...]) -> tuple[str, ...]:
    """Split each entry like a shell splits words, without running a shell; the words of an entry
    read from the environment are FromEnvironment words that show the entry as written."""
    words: list[str] = []
    for entry in entries:
        if isinstance(entry, FromEnvironment):
            words.extend(_words_from_environment(_split(str(entry)), entry.written))
        else:
            words.extend(_split(str(entry)))
    return tuple(words)


def _split(text: str) -> list[str]:
    if not _NEEDS_SHLEX.search(text):
        return text.split()
    import shlex

    return shlex.split(text)


def _words_from_environment(words: list[str], written: str) -> list[str]:
    """``words`` marked as read from the environment, each showing its part of the entry ``written``."""
    try:
        parts = _split(written)
    except ValueError:
        parts = []
    if len(parts) == len(words):
        # "--token ${oc.env:TOKEN}": "--token" is the same as written, the second word shows as written.
        return [word if word == part else FromEnvironment(word, part) for word, part in zip(words, parts)]
    # "${oc.env:EXTRA_ARGS}" became several words: the entry as written stands for all of them.
    return [FromEnvironment(word, written if index == 0 else "") for index, word in enumerate(words)]


class StepContext:
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
            raise ConfigError(
                f"{where} must be the path or command name of a Python interpreter, not a {kind_of(value)}"
            )
        found = self.interpreters.get(value)
        if found is not None:
            return keep_origin(found, value)
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
        return keep_origin(found, value)

    def directory(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: 'cwd' must be the path of a directory, not a {kind_of(value)}")
        path = os.path.join(self.cwd, self.config_dir, os.path.expanduser(value))
        if not os.path.isdir(path):
            raise ConfigError(f"{where}: 'cwd': {os.path.abspath(path)} is not a directory")
        return keep_origin(os.path.abspath(path), value)


def build_step(number: int, raw: Any, context: StepContext, *, matrix: tuple[tuple[str, str], ...] = ()) -> Step:
    """One step, every key checked; the error names the step by number and script."""
    source = context.source
    where = f"{source}: step {number}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a step must be a mapping with a 'script', not a {kind_of(raw)}")
    script = raw.get("script")
    if isinstance(script, str) and script.strip():
        where = f"{where} ({script})"
    for key in raw:
        if key not in STEP_KEYS:
            raise ConfigError(f"{where}: {unknown_key(key, STEP_KEYS)}")
    if script is None:
        raise ConfigError(f"{where}: 'script' is missing")
    if not isinstance(script, str) or not script.strip():
        raise ConfigError(f"{where}: 'script' must be the path of a Python file, not a {kind_of(script)}")
    arguments = _build_arguments(raw.get("arguments"), where, context.words)
    if not matrix and (len(raw) == 1 or (len(raw) == 2 and "arguments" in raw)):
        # The common case, as fast as before: a script and its arguments.
        return Step(
            number=number,
            script=script,
            path=_script_path(script, where, context, None),
            arguments=arguments,
            python=context.python,
        )
    fields: dict[str, Any] = {"script": script}
    for field, rule in RULES.items():
        fields[field] = rule(raw, where, context, fields)
    return Step(number=number, arguments=arguments, matrix=matrix, **fields)


# A rule gets the step's mapping, how errors name the step, the context, and the fields built so far;
# it returns its record field's value (its default when the key is absent).
Rule = Callable[[Mapping[str, Any], str, StepContext, Dict[str, Any]], Any]


def _name(raw: Mapping[str, Any], where: str, context: StepContext, fields: dict[str, Any]) -> str | None:
    name = raw.get("name")
    if name is None:
        return None
    text = as_written(name)
    if text is None:
        raise ConfigError(f"{where}: 'name' must be one line of text, not a {kind_of(name)}")
    if not text.strip():
        raise ConfigError(f"{where}: 'name' is empty: give the text to show for the step, or leave 'name' out")
    # Any line break Python's own line splitting knows (\r, \u2028, ...) would break a log line in two.
    if text.splitlines() != [text]:
        # YAML's block scalars (| and >) end with a line break unless written |- or >-.
        hint = " (at its end: write |- or >- for a block scalar)" if len(text.splitlines()) == 1 else ""
        raise ConfigError(f"{where}: 'name' must be one line of text, but it holds a line break{hint}")
    return text


def _cwd(raw: Mapping[str, Any], where: str, context: StepContext, fields: dict[str, Any]) -> str | None:
    cwd = raw.get("cwd")
    return context.directory(cwd, where) if cwd is not None else None


def _python(raw: Mapping[str, Any], where: str, context: StepContext, fields: dict[str, Any]) -> str | None:
    python = raw.get("python")
    if python is None:
        return context.python
    if not fields["script"].endswith(".py"):
        raise ConfigError(f"{where}: 'python' is the interpreter of .py scripts; {fields['script']} is run directly")
    return context.interpreter(python, f"{where}: 'python'")


def _path(raw: Mapping[str, Any], where: str, context: StepContext, fields: dict[str, Any]) -> str:
    return _script_path(fields["script"], where, context, fields["cwd"])


def _env(raw: Mapping[str, Any], where: str, context: StepContext, fields: dict[str, Any]) -> Any:
    return _build_env(raw.get("env"), where)


def _slurm(raw: Mapping[str, Any], where: str, context: StepContext, fields: dict[str, Any]) -> Any:
    return _build_slurm(raw, where)


def _number_rule(key: str, default: float | None, *, inclusive: bool) -> Rule:
    return lambda raw, where, context, fields: check_number(raw, key, where, default, minimum=0.0, inclusive=inclusive)


def _whole_rule(key: str, default: int) -> Rule:
    return lambda raw, where, context, fields: check_whole(raw, key, where, default, minimum=0)


def _flag_rule(key: str, default: bool) -> Rule:
    return lambda raw, where, context, fields: check_flag(raw, key, where, default)


# Each record field's rule, in the order they are checked (the first problem found is the one said).
# "path" is not a key of its own: the script is looked up once 'cwd' is known. A new step key is a
# rule here, its name in STEP_KEYS (the order messages list them in) and its field in lynx.records.Step.
RULES: dict[str, Rule] = {
    "name": _name,
    "cwd": _cwd,
    "python": _python,
    "timeout": _number_rule("timeout", None, inclusive=False),
    "retry_delay": _number_rule("retry_delay", 0.0, inclusive=True),
    "retry_backoff": _number_rule("retry_backoff", 1.0, inclusive=False),
    "retries": _whole_rule("retries", 0),
    "continue_on_error": _flag_rule("continue_on_error", False),
    "path": _path,
    "env": _env,
    "slurm": _slurm,
}


def _script_path(script: str, where: str, context: StepContext, cwd: str | None) -> str:
    """Where the step's script is, as the step's process will be able to find it."""
    return keep_origin(_find_script(script, where, context, cwd), script)


def _find_script(script: str, where: str, context: StepContext, cwd: str | None) -> str:
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
            text = None if isinstance(entry, bool) else as_written(entry)
            if text is None:
                raise ConfigError(f"{where}: 'arguments' entry {position} must be a string, not a {kind_of(entry)}")
            texts.append(text)
        try:
            arguments = words[id(entries)] = split_arguments(texts)
        except ValueError as error:
            raise ConfigError(f"{where}: cannot split 'arguments': {error}") from None
    else:
        raise ConfigError(
            f"{where}: 'arguments' must be a list of strings or a mapping of options, not a {kind_of(entries)}"
        )
    if any("\0" in word for word in arguments):
        raise ConfigError(f"{where}: 'arguments' contain a NUL character, which no program can receive")
    return arguments


def _mapping_arguments(entries: dict[Any, Any], where: str) -> tuple[str, ...]:
    """``{input_file: x, n: 5, flag: true, bare: null}`` -> ``--input_file x --n 5 --flag True --bare``;
    a key that already starts with a dash (``--foo``, ``-v``) is the option as written."""
    words: list[str] = []
    for key, value in entries.items():
        option = as_written(key)
        if option is None or not option.strip():
            raise ConfigError(f"{where}: 'arguments' keys must be option names, not a {kind_of(key)}")
        words.append(option if option.startswith("-") else f"--{option}")
        if value is None:
            continue
        # str(True) is "True", which fire reads as a boolean.
        text = str(value) if isinstance(value, bool) else as_written(value)
        if text is None:
            raise ConfigError(
                f"{where}: 'arguments' value of '{option}' must be a string, number, true/false or null, "
                f"not a {kind_of(value)}"
            )
        words.append(text)
    return tuple(words)


def _build_env(raw: Any, where: str) -> tuple[tuple[str, str | None], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'env' must be a mapping of variable names to values, not a {kind_of(raw)}")
    env: list[tuple[str, str | None]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ConfigError(f"{where}: 'env': {shown(key)} is not a variable name")
        if value is None:
            env.append((key, None))
            continue
        text = None if isinstance(value, bool) else as_written(value)
        if text is None:
            raise ConfigError(
                f"{where}: 'env': {key} must be a string, a number or null (to remove it), not {shown(value)}"
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
            f"{where}: 'slurm' must be a mapping of srun options (or true for the defaults), not a {kind_of(value)}"
        )
    # Only configs with SLURM steps load the list of srun's options.
    from lynx.config.slurm_options import option_problem

    options: list[tuple[str, str | bool]] = []
    for key, option_value in value.items():
        problem = option_problem(str(key))
        if problem is not None:
            raise ConfigError(f"{where}: slurm: {problem}")
        if option_value is False:
            continue
        if option_value is True:
            options.append((str(key), True))
        elif (text := as_written(option_value)) is not None:
            if not text or "\0" in text or "\n" in text:
                raise ConfigError(f"{where}: slurm: '{key}' must be a non-empty single-line value")
            options.append((str(key), text))
        else:
            hint = " (give a value, or true for a bare --option)" if option_value is None else ""
            raise ConfigError(
                f"{where}: slurm: '{key}' must be a string or number, not a {kind_of(option_value)}{hint}"
            )
    return tuple(options)


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
        here, there = os.path.join(self.cwd, path), os.path.abspath(beside_config)
        looked = here if here == there else f"{here} and {there}"  # the config in the working directory: once
        raise ConfigError(f"{where}: script not found (looked in {looked})")
