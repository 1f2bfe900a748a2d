"""``lynx service install|remove``: bring this directory's background schedulers back at boot.

With systemd: a user unit that runs ``lynx restore --all`` in this directory (and the commands to enable
it); without: an ``@reboot`` line in the user's crontab. ``remove`` undoes either.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, TextIO

from lynx.errors import EXIT_OK, ConfigError, LynxError

KINDS = ("auto", "systemd", "cron")
# How the crontab line says whose it is: the directory, so a second install replaces it.
CRON_MARK = "# lynx restore of "


def service(
    action: str,
    *,
    kind: str = "auto",
    directory: Path | None = None,
    lynx: str | None = None,
    stdout: TextIO = sys.stdout,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Run ``lynx service ACTION`` (install or remove) and return its exit code.

    Args:
        kind: systemd (a user unit), cron (an @reboot line) or auto (systemd when it runs this machine).
        lynx: the ``lynx`` executable the service runs (default: the one running now).

    Raises:
        LynxError: the unit or the crontab cannot be written (exit 1); ConfigError: a bad kind (exit 2).
    """
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    directory = (directory or Path.cwd()).resolve()
    if kind == "auto":
        kind = "systemd" if os.path.isdir("/run/systemd/system") else "cron"
    executable = lynx or _lynx_executable()
    if kind == "systemd":
        unit = unit_path(directory, environ)
        if action == "install":
            _write(unit, unit_text(directory, executable, environ))
            stdout.write(f"Wrote {unit}. To start it at boot, and now:\n")
            stdout.write(f"  systemctl --user daemon-reload && systemctl --user enable --now {unit.name}\n")
            import pwd

            user = pwd.getpwuid(os.getuid()).pw_name
            if not os.path.exists(f"/var/lib/systemd/linger/{user}"):
                stdout.write(f"  loginctl enable-linger {user}    # so that it starts at boot, not at your login\n")
        else:
            try:
                unit.unlink()
            except FileNotFoundError:
                stdout.write(f"There is no {unit}: nothing to remove.\n")
                return EXIT_OK
            except OSError as error:
                raise LynxError(f"cannot remove {unit}: {error.strerror or error}") from None
            stdout.write(f"Removed {unit}. Also run:\n  systemctl --user disable {unit.name}\n")
        return EXIT_OK
    line = cron_line(directory, executable)
    crontab = shutil.which("crontab", path=environ.get("PATH", os.defpath))
    if crontab is None:
        if action == "install":
            stdout.write(f"There is no crontab command here; add this line to your crontab:\n{line}\n")
        else:
            stdout.write("There is no crontab command here: remove the line that ends with "
                         f"'{CRON_MARK}{directory}' from your crontab, if you added it.\n")  # fmt: skip
        return EXIT_OK
    current = _read_crontab(crontab)
    kept = [each for each in current if not each.endswith(f"{CRON_MARK}{directory}")]
    if action == "install":
        _write_crontab(crontab, [*kept, line])
        stdout.write(f"Added to your crontab:\n{line}\n")
    elif len(kept) == len(current):
        stdout.write("Your crontab has no line for this directory: nothing to remove.\n")
    else:
        _write_crontab(crontab, kept)
        stdout.write("Removed this directory's line from your crontab.\n")
    return EXIT_OK


def unit_path(directory: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """``~/.config/systemd/user/lynx-<folder>-<hash>.service``: one unit per directory."""
    config = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".config")
    folder = re.sub(r"[^A-Za-z0-9_.-]", "_", directory.name)[:40] or "root"
    digest = hashlib.sha256(str(directory).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return Path(config) / "systemd" / "user" / f"lynx-{folder}-{digest}.service"


def unit_text(directory: Path, lynx: str, environ: Mapping[str, str] = os.environ) -> str:
    """The systemd user unit: ``lynx restore --all`` in ``directory``, once at start, schedulers left running."""
    path = environ.get("PATH", os.defpath)
    return (
        "[Unit]\n"
        f"Description=Lynx background schedulers of {_escape(str(directory))}\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        # restore starts the schedulers and exits; they keep running (not ended when the unit stops).
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        "KillMode=process\n"
        f"WorkingDirectory={_escape(str(directory))}\n"
        # The steps need what a login shell would give them: the PATH of the shell that installed it.
        f'Environment="PATH={_escape(path)}"\n'
        f"ExecStart={_quote(lynx)} restore --all\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def cron_line(directory: Path, lynx: str) -> str:
    """``@reboot cd DIR && LYNX restore --all >> DIR/.lynx/restore.log 2>&1 # lynx restore of DIR``."""
    folder = shlex.quote(str(directory))
    log = shlex.quote(str(directory / ".lynx" / "restore.log"))
    # cron turns an unescaped % into a line break.
    command = f"cd {folder} && {shlex.quote(lynx)} restore --all >> {log} 2>&1".replace("%", "\\%")
    return f"@reboot {command} {CRON_MARK}{directory}"


def _lynx_executable() -> str:
    """The absolute path of the ``lynx`` command running now (its console script beside this Python)."""
    script = Path(sys.executable).with_name("lynx")
    if script.exists():
        return str(script)
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "lynx" and os.access(argv0, os.X_OK):
        return argv0
    found = shutil.which("lynx")
    if found is None:
        raise LynxError("cannot find the lynx command to run at boot (is Lynx installed with pip?)")
    return os.path.abspath(found)


def _escape(text: str) -> str:
    """A value for a unit file: systemd expands % specifiers; a literal % is %%."""
    return text.replace("%", "%%").replace('"', '\\"')


def _quote(path: str) -> str:
    return f'"{_escape(path)}"' if any(char.isspace() for char in path) else _escape(path)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise LynxError(f"cannot write {path}: {error.strerror or error}") from None


def _read_crontab(crontab: str) -> list[str]:
    listed = subprocess.run([crontab, "-l"], capture_output=True, text=True, timeout=30)
    # 'no crontab for USER' is an empty one.
    return listed.stdout.splitlines() if listed.returncode == 0 else []


def _write_crontab(crontab: str, lines: list[str]) -> None:
    text = "".join(f"{line}\n" for line in lines)
    written = subprocess.run([crontab, "-"], input=text, capture_output=True, text=True, timeout=30)
    if written.returncode != 0:
        said = " ".join(written.stderr.split()) or f"exit code {written.returncode}"
        raise LynxError(f"cannot write your crontab: {said}")
