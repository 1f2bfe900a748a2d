"""The config file: read its YAML, resolve its interpolations, check all of it, and build the frozen records.

Nothing past this package sees YAML, OmegaConf objects or raw dicts. The modules, one concern each:
``reading`` (safe YAML), ``interpolation`` (OmegaConf), ``values`` (numbers as written, how errors
show values), ``steps`` (each step key's rules), ``slurm_options`` (what ``slurm:`` may set),
``schedules`` (the ``cron`` section) and ``pipeline`` (the top level). The records themselves live in
:mod:`lynx.records`, which other modules import instead of this package.
"""

from __future__ import annotations

import gc
import os
from typing import Mapping, Sequence

from lynx.config.steps import split_arguments
from lynx.records import Pipeline, Schedule, Step

__all__ = ["Pipeline", "Schedule", "Step", "load_pipeline", "split_arguments"]


def load_pipeline(
    path: str | os.PathLike[str],
    *,
    cwd: str | None = None,
    environ: Mapping[str, str] = os.environ,
    overrides: Sequence[str] = (),
) -> Pipeline:
    """Read, check and convert the config file at ``path``.

    Args:
        path: the YAML file.
        cwd: where relative script paths are looked up first (default: the current directory).
        environ: whose PATH finds a ``python`` given as a command name.
        overrides: ``KEY=VALUE`` changes to the file's document (lynx.config.overrides), applied first.

    Raises:
        ConfigError: for anything wrong with the file, naming the step and field.
    """
    from lynx.config.pipeline import build_pipeline
    from lynx.config.reading import read_yaml
    from lynx.config.values import MATRIX_REF

    source = os.fspath(path)
    # A config is a tree of new containers, built once: the cyclic collector, left on, would scan them
    # again and again as they grow (a tenth of the time for a file of thousands of steps).
    collecting = gc.isenabled()
    gc.disable()
    try:
        document, interpolations, matrix_refs = read_yaml(source)
        if overrides:
            from lynx.config.overrides import apply_overrides

            document = apply_overrides(document, overrides, source)
            interpolations += sum(override.count("${") for override in overrides)
            matrix_refs += sum(override.count(MATRIX_REF) for override in overrides)
        if interpolations > matrix_refs:
            # Only configs that use interpolation pay for OmegaConf (${matrix.…} is Lynx's own).
            from lynx.config.interpolation import resolve_interpolations

            document = resolve_interpolations(document, source)
        return build_pipeline(document, source, cwd or os.getcwd(), environ, matrix_refs=matrix_refs > 0)
    finally:
        if collecting:
            gc.enable()
