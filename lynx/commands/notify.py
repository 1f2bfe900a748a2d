"""``lynx notify --test``: send one test event on every channel of a config and say how each went."""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping, TextIO

from lynx.config import load_pipeline
from lynx.errors import EXIT_FAILED, EXIT_OK, ConfigError


def notify_test(config_file: str, *, stdout: TextIO = sys.stdout, environ: Mapping[str, str] = os.environ) -> int:
    """One line per channel, ``ok`` or why not; 0 when every channel took the event, 1 otherwise.

    Raises:
        ConfigError: the config is not valid (as for ``lynx start``), or it has no channels.
    """
    if not os.path.isfile(config_file):
        raise ConfigError(f"the configuration file {config_file} does not exist")
    pipeline = load_pipeline(config_file)
    if not pipeline.channels:
        raise ConfigError(f"{config_file} has no 'notify' channels to test")
    from lynx.history import recorder_for
    from lynx.logs import setup_logging
    from lynx.notify.notifier import Notifier

    # What a hook command prints is shown, as a run would log it.
    setup_logging(level=logging.INFO, color=False, screen=stdout, log_file=None, log_size=0, backup_count=0)
    history = recorder_for(os.getcwd(), pipeline.source, None, environ)
    notifier = Notifier(pipeline.channels, record=history.record, environ=environ)
    outcomes = notifier.test()
    for channel, failure in outcomes:
        stdout.write(f"{channel.label}: {'ok' if failure is None else failure}\n")
    stdout.flush()
    return EXIT_OK if all(failure is None for _, failure in outcomes) else EXIT_FAILED
