"""Notification figures (issue 17): a config without ``notify`` pays nothing, and a run with a webhook to a
local server costs at most 20 ms more than without."""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from figures_operations import IMPORT_LINE
from harness import PYTHON, TRIVIAL_STEP, Bench, BenchError, Row, fmt_diff_ms, fmt_ms, median, write

# What a config without 'notify' must never load: Lynx's notifier and the libraries its channels use.
FORBIDDEN = ("lynx.notify", "lynx.config.notify", "urllib", "http", "smtplib", "email", "ssl", "json", "apprise")


def _forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def _imported(bench: Bench, cwd: Path, config: str) -> list[str]:
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-m", "lynx", "start", "-ni", "-cf", config],
        cwd=cwd,
        env=bench.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise BenchError(f"python -X importtime -m lynx start -cf {config}: exited with {result.returncode}")
    found = [match.group(2) for match in map(IMPORT_LINE.match, result.stderr.splitlines()) if match]
    return [name for name in found if _forbidden(name)]


class _Server:
    """A webhook receiver on 127.0.0.1 in a thread of this process: answers 200 and counts the posts."""

    def __init__(self) -> None:
        self.posts = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    outer.posts += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def figure_notify_imports(bench: Bench) -> list[Row]:
    """A one-shot run without ``notify`` loads none of the notifier's modules (urllib, http, smtplib, email, json)."""
    cwd = bench.folder("notify-imports")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "plain.yaml", "steps:\n  - script: step.py\n")
    write(cwd, "webhook.yaml", "notify:\n  - webhook: http://127.0.0.1:9/hook\nsteps:\n  - script: step.py\n")
    plain = _imported(bench, cwd, "plain.yaml")
    # The same run with a webhook that is never sent (it wants failures): what a config with 'notify' loads.
    webhook = _imported(bench, cwd, "webhook.yaml")
    return [
        Row(
            "notify-imports: one-shot run without `notify`, notifier modules loaded",
            f"{len(plain)} modules",
            f"{len(webhook)} modules (with a webhook)",
            ", ".join(plain) or "none",
            "none",
            not plain,
            samples={"plain": plain, "webhook": webhook},
            note="modules of lynx.notify, lynx.config.notify, urllib, http, smtplib, email, ssl, json, apprise; "
            "with a webhook they load in a thread while the first step runs",
        )
    ]


def figure_notify_webhook(bench: Bench) -> list[Row]:
    """A one-shot run that posts a success webhook to a local server vs the same run without ``notify``."""
    cwd = bench.folder("notify-webhook")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "plain.yaml", "steps:\n  - script: step.py\n")
    server = _Server()
    try:
        write(
            cwd,
            "webhook.yaml",
            f"notify:\n  - webhook: {server.url}\n    on: [success]\nsteps:\n  - script: step.py\n",
        )

        def run(config: str) -> Callable[[], float]:
            return lambda: bench.run(bench.lynx_argv("start", "-ni", "-cf", config), cwd, f"lynx start ({config})").wall

        a, b = bench.interleave(run("webhook.yaml"), run("plain.yaml"))
        posts = server.posts
    finally:
        server.close()
    if posts != len(a) + 1:  # the measured runs and the warm-up
        raise BenchError(f"the local server got {posts} webhooks from {len(a) + 1} runs")
    la, lb = median(a), median(b)
    return [
        Row(
            "notify-webhook: one-shot run, 1 step, success webhook to a local server vs no `notify`",
            fmt_ms(la),
            fmt_ms(lb),
            fmt_diff_ms(la - lb),
            "<= +20 ms",
            la - lb <= 0.020,
            samples={"lynx_s": a, "baseline_s": b},
            note="the run waits for the delivery before it exits; the server runs in the benchmark's process",
        )
    ]


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "notify-imports": figure_notify_imports,
    "notify-webhook": figure_notify_webhook,
}
