"""Notifications (``notify:``), end to end through the real CLI, against real servers on 127.0.0.1.

An HTTP server (the standard library's, in a thread) takes webhooks, Healthchecks pings and Apprise's
``json://`` posts, and can answer 500, never answer, or be a closed port; aiosmtpd takes e-mail,
with and without AUTH; hook commands are real programs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config, write_script

# aiosmtpd's own advice, about the test servers it runs here (AUTH without TLS on 127.0.0.1).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


# --- servers ------------------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST; ``statuses`` are its next answers (then 200)."""

    url: str
    requests: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    # Never answer: keep the connection open until the test ends.
    hang: bool = False

    def events(self) -> list[str]:
        return [request.json().get("event") for request in self.requests if request.path.startswith("/hook")]


@contextlib.contextmanager
def receiver(statuses: list[int] | None = None, hang: bool = False) -> Iterator[Receiver]:
    release = threading.Event()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                got.requests.append(Request(self.path, dict(self.headers), body))
                code = got.statuses.pop(0) if got.statuses else 200
            if got.hang:
                release.wait(120)
                return
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    got = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}", statuses=list(statuses or []), hang=hang)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mailbox:
    port: int
    messages: list[Any] = field(default_factory=list)


@contextlib.contextmanager
def smtp_server(auth: tuple[str, str] | None = None) -> Iterator[Mailbox]:
    """aiosmtpd on 127.0.0.1; with ``auth`` (user, password) it requires that login."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox(port=closed_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
            box.messages.append((envelope.mail_from, envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert auth is not None
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (auth[0].encode(), auth[1].encode())
        # handled=False: the server answers 535 itself.
        return AuthResult(success=good, handled=False)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        authenticator=authenticator if auth else None,
        auth_required=auth is not None,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# --- helpers ------------------------------------------------------------------------------------


def config_with(directory: Path, notify: str, *, steps: str = "  - script: ok.py\n", extra: str = "") -> Path:
    marker_step(directory, "ok.py")
    marker_step(directory, "fail.py", exit_code=3)
    (directory / "conf").mkdir(exist_ok=True)
    return write_config(directory, f"{extra}notify:\n{notify}steps:\n{steps}", name="conf/config.yaml")


def history(directory: Path) -> list[dict[str, Any]]:
    result = run_lynx("history", "--json", "-n", "0", cwd=directory)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def timed_lynx(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_lynx(*args, cwd=cwd, env=env)
    return result, time.monotonic() - started


# --- webhooks -----------------------------------------------------------------------------------


def test_a_failed_run_posts_its_history_record_as_json_to_a_webhook(tmp_path: Path) -> None:
    with receiver() as server:
        config_with(
            tmp_path,
            f"  - webhook: {server.url}/hook/T0KEN\n    headers: {{Authorization: Bearer s3cret}}\n",
            steps="  - script: ok.py\n  - script: fail.py\n",
        )
        result = run_lynx("start", "-ni", cwd=tmp_path)

        assert result.returncode == 1, result.stdout + result.stderr
        assert len(server.requests) == 1
        request = server.requests[0]
    assert request.path == "/hook/T0KEN"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer s3cret"
    event = request.json()
    assert event["event"] == "failure"
    # The history's own record, key for key and value for value, plus what an event adds.
    (record,) = history(tmp_path)
    assert {key: value for key, value in event.items() if key not in ("event", "log_tail", "text")} == record
    assert event["result"] == "failed" and event["failed_step"] == 2
    assert event["text"] == (
        f"config failed at step 2 (fail.py) after {record['duration_s']:.2f} s on {record['host']}: exit code 3."
    )
    # The log tail: the step's output with Lynx's own lines, up to the summary.
    assert "output of fail.py\n" in event["log_tail"]
    assert "Step 2 (fail.py) failed with exit code 3.\n" in event["log_tail"]
    assert "Run summary:" in event["log_tail"]
    assert "Could not notify" not in result.stdout + result.stderr


def test_start_and_success_are_sent_only_when_asked_and_failure_is_the_default(tmp_path: Path) -> None:
    with receiver() as server:
        config_with(
            tmp_path, f"  - webhook: {server.url}/hook/a\n    on: [start, success]\n  - webhook: {server.url}/hook/b\n"
        )
        assert run_lynx("start", "-ni", cwd=tmp_path).returncode == 0

        paths = [(request.path, request.json()["event"]) for request in server.requests]
    # Only the first channel wants a success; the second (failure, by default) hears nothing.
    assert paths == [("/hook/a", "start"), ("/hook/a", "success")]
    start, success = (request.json() for request in server.requests)
    assert start["run_id"] == success["run_id"] == history(tmp_path)[0]["run_id"]
    assert start["result"] is None and start["steps"] == [] and start["log_tail"] == ""
    assert success["result"] == "ok" and success["text"].startswith("config ok: 1 step in ")


def test_a_server_answering_500_then_200_gets_the_event_on_the_retry(tmp_path: Path) -> None:
    with receiver(statuses=[500]) as server:
        config_with(tmp_path, f"  - webhook: {server.url}/hook/x\n    on: success\n")
        result = run_lynx("start", "-ni", cwd=tmp_path)

        assert result.returncode == 0
        assert [request.json()["event"] for request in server.requests] == ["success", "success"]
    assert "Could not notify" not in result.stdout + result.stderr


def test_a_server_always_answering_500_is_one_warning_naming_the_channel_masked(tmp_path: Path) -> None:
    with receiver(statuses=[500, 500, 500]) as server:
        config_with(tmp_path, f"  - webhook: {server.url}/hook/SECRET-PATH\n", steps="  - script: fail.py\n")
        result = run_lynx("start", "-ni", "-lf", "lynx.log", cwd=tmp_path)

        # The one-shot run waited for the retries: all three tries were made before it exited.
        assert len(server.requests) == 3

    assert result.returncode == 1  # the step's failure, untouched
    port = server.url.rsplit(":", 1)[1]
    warning = f"Could not notify webhook (http://127.0.0.1:{port}/…): HTTP 500 after 3 tries."
    assert result.stdout.count(warning) == 1
    log = (tmp_path / "lynx.log").read_text()
    assert log.count(warning) == 1
    assert "SECRET-PATH" not in result.stdout + result.stderr + log


def test_a_server_that_never_answers_is_given_up_at_the_timeout_and_the_exit_code_holds(tmp_path: Path) -> None:
    with receiver(hang=True) as server:
        config_with(tmp_path, f"  - webhook: {server.url}/hook/x\n    on: [success]\n    timeout: 2\n")
        result, took = timed_lynx("start", "-ni", cwd=tmp_path)

        assert len(server.requests) == 1
    assert result.returncode == 0
    assert took < 2 + 4, took  # the timeout, Lynx's own start-up and a generous margin
    assert "Could not notify webhook (http://127.0.0.1:" in result.stdout
    assert "/…): no answer within 2 s." in result.stdout
    assert "Traceback" not in result.stderr


def test_a_closed_port_is_retried_twice_then_one_warning(tmp_path: Path) -> None:
    port = closed_port()
    config_with(tmp_path, f"  - webhook: http://127.0.0.1:{port}/hook/x\n    on: [success]\n")
    result, took = timed_lynx("start", "-ni", cwd=tmp_path)

    assert result.returncode == 0
    assert f"Could not notify webhook (http://127.0.0.1:{port}/…): connection refused after 3 tries." in result.stdout
    assert 1.4 < took < 10  # the two backoffs (0.5 s, 1 s) were waited for


# --- Healthchecks ---------------------------------------------------------------------------------


def test_healthchecks_gets_start_then_success_with_one_uuid_rid_and_the_tail_as_body(tmp_path: Path) -> None:
    with receiver() as server:
        config_with(tmp_path, f"  - healthchecks: {server.url}/ping/0b7e2d6a-check/\n")
        assert run_lynx("start", "-ni", cwd=tmp_path).returncode == 0
        marker_step(tmp_path, "ok.py", exit_code=7)
        assert run_lynx("start", "-ni", cwd=tmp_path).returncode == 1
        requests = list(server.requests)

    paths = [request.path.split("?")[0] for request in requests]
    assert paths == ["/ping/0b7e2d6a-check/start", "/ping/0b7e2d6a-check", "/ping/0b7e2d6a-check/start",
                     "/ping/0b7e2d6a-check/7"]  # fmt: skip
    rids = [re.search(r"\?rid=(.+)$", request.path).group(1) for request in requests]  # type: ignore[union-attr]
    assert all(str(uuid.UUID(rid)) == rid for rid in rids)
    assert rids[0] == rids[1] != rids[2] == rids[3]
    assert requests[0].body == b""
    assert "output of ok.py" in requests[1].body.decode()
    assert "Step 1 (ok.py) failed with exit code 7." in requests[3].body.decode()


def test_a_timed_out_run_pings_fail(tmp_path: Path) -> None:
    write_script(tmp_path, "slow.py", "import time; time.sleep(30)\n")
    with receiver() as server:
        config_with(
            tmp_path, f"  - healthchecks: {server.url}/ping/c\n", steps="  - script: slow.py\n    timeout: 0.5\n"
        )
        assert run_lynx("start", "-ni", cwd=tmp_path).returncode == 1

        assert [request.path.split("?")[0] for request in server.requests] == ["/ping/c/start", "/ping/c/fail"]


# --- e-mail -------------------------------------------------------------------------------------


def test_an_email_says_which_step_failed_its_command_and_the_end_of_the_output(tmp_path: Path) -> None:
    with smtp_server() as box:
        config_with(
            tmp_path,
            f"  - email: {{to: [me@lab.org, ops@lab.org], host: 127.0.0.1, port: {box.port}, from: lynx@lab.org}}\n",
            steps="  - script: ok.py\n  - script: fail.py\n    name: train\n    arguments: [--epochs 3]\n",
        )
        assert run_lynx("start", "-ni", cwd=tmp_path).returncode == 1

        ((sender, recipients, message),) = box.messages
    assert sender == "lynx@lab.org"
    assert recipients == ["me@lab.org", "ops@lab.org"]
    assert message["Subject"] == "[lynx] config failed at step 2 (train)"
    body = message.get_payload(decode=True).decode().replace("\r\n", "\n")
    assert body.startswith("config failed at step 2 (train) after ")
    assert "\nStep 2 (train) failed with exit code 3.\n" in body
    python = history(tmp_path)[0]["steps"][1]["argv"][0]
    assert f"\nCommand: {python} fail.py --epochs 3\n" in body
    assert "output of fail.py" in body.split("The end of the output:")[1]


def test_an_email_through_a_server_that_wants_a_login_uses_the_password_from_the_environment(tmp_path: Path) -> None:
    with smtp_server(auth=("alice", "pa55word")) as box:
        config_with(
            tmp_path,
            f"  - email: {{to: me@lab.org, host: 127.0.0.1, port: {box.port}, user: alice, password_env: SMTP_PW}}\n",
            steps="  - script: fail.py\n",
        )
        good = run_lynx("start", "-ni", cwd=tmp_path, env=clean_env(SMTP_PW="pa55word"))
        assert len(box.messages) == 1
        bad = run_lynx("start", "-ni", cwd=tmp_path, env=clean_env(SMTP_PW="wrong-pa55"))
        assert len(box.messages) == 1

    assert good.returncode == bad.returncode == 1
    assert "Could not notify" not in good.stdout
    assert (
        f"Could not notify email (me@lab.org via 127.0.0.1:{box.port}): the server refused the login (SMTP 535)."
        in (bad.stdout)
    )
    assert "wrong-pa55" not in bad.stdout + bad.stderr and "alice" not in bad.stdout + bad.stderr


def test_a_password_env_that_is_not_set_is_refused_up_front(tmp_path: Path) -> None:
    config_with(tmp_path, "  - email: {to: me@lab.org, host: 127.0.0.1, user: alice, password_env: SMTP_PW}\n")

    result = run_lynx("start", "-ni", cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == (
        "Error: conf/config.yaml: notify item 1 (email): email: 'password_env': the environment variable SMTP_PW "
        "is not set\n"
    )
    assert ran(tmp_path) == []


# --- Apprise ------------------------------------------------------------------------------------


def test_an_apprise_json_url_reaches_the_server_with_title_and_body(tmp_path: Path) -> None:
    with receiver() as server:
        address = server.url.split("://")[1]
        config_with(tmp_path, f"  - apprise: [json://{address}/apprise/x]\n", steps="  - script: fail.py\n")
        result = run_lynx("start", "-ni", cwd=tmp_path)

        assert result.returncode == 1
        (request,) = server.requests
    assert request.path == "/apprise/x"
    message = request.json()
    assert message["title"] == "[lynx] config failed at step 1 (fail.py)"
    assert "Step 1 (fail.py) failed with exit code 3." in message["message"]
    assert "Could not notify" not in result.stdout


def test_apprise_without_the_library_is_a_clear_error_and_nothing_runs(tmp_path: Path) -> None:
    # Python without Apprise: a sitecustomize that makes 'import apprise' fail.
    blocker = tmp_path / "no-apprise"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['apprise'] = None\n")
    config_with(tmp_path, "  - apprise: tgram://bot/chat\n")

    result = run_lynx("start", "-ni", cwd=tmp_path, env=clean_env(PYTHONPATH=str(blocker)))

    assert result.returncode == 2
    assert result.stderr.startswith(
        "Error: conf/config.yaml: notify item 1 (apprise): this channel needs the Apprise library: "
        'pip install "lynx-pipeline[apprise]"'
    )
    assert ran(tmp_path) == []


# --- hook commands ------------------------------------------------------------------------------


def test_a_hook_command_gets_the_event_in_its_environment_and_on_its_input_and_what_it_prints_is_logged(
    tmp_path: Path,
) -> None:
    write_script(
        tmp_path,
        "alert.py",
        """
        import json, os, sys
        event = json.load(sys.stdin)
        keys = ["LYNX_EVENT", "LYNX_RUN_ID", "LYNX_NAME", "LYNX_RESULT", "LYNX_FAILED_STEP", "LYNX_CONFIG_FILE",
                "LYNX_LOG_FILE"]
        with open("hook.json", "w") as handle:
            json.dump({"env": {key: os.environ[key] for key in keys}, "event": event, "argv": sys.argv[1:]}, handle)
        print(f"paging the team about {event['text']}")
        """,
    )
    config_with(tmp_path, "  - command: [alert.py, --channel, ml]\n    on: [failure, interrupted]\n",
                steps="  - script: fail.py\n")  # fmt: skip

    result = run_lynx("start", "-ni", "-lf", "lynx.log", cwd=tmp_path)

    assert result.returncode == 1
    seen = json.loads((tmp_path / "hook.json").read_text())
    (record,) = history(tmp_path)
    assert seen["argv"] == ["--channel", "ml"]
    assert seen["env"] == {
        "LYNX_EVENT": "failure",
        "LYNX_RUN_ID": record["run_id"],
        "LYNX_NAME": "config",
        "LYNX_RESULT": "failed",
        "LYNX_FAILED_STEP": "1",
        "LYNX_CONFIG_FILE": str(tmp_path / "conf" / "config.yaml"),
        "LYNX_LOG_FILE": str(tmp_path / "lynx.log"),
    }
    assert seen["event"]["run_id"] == record["run_id"] and seen["event"]["event"] == "failure"
    line = f"command (alert.py): paging the team about {seen['event']['text']}"
    assert line in result.stdout.splitlines()
    assert line in (tmp_path / "lynx.log").read_text()


def test_a_hook_command_that_fails_is_one_warning_with_its_last_line(tmp_path: Path) -> None:
    write_script(tmp_path, "alert.py", "import sys\nprint('no route to pager')\nsys.exit(5)\n")
    config_with(tmp_path, "  - command: alert.py\n    on: success\n")

    result = run_lynx("start", "-ni", cwd=tmp_path)

    assert result.returncode == 0
    assert "Could not notify command (alert.py): exit code 5: no route to pager." in result.stdout.splitlines()


def test_a_hook_command_that_hangs_is_ended_at_its_timeout_and_the_exit_code_holds(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "hang.py",
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        with open("pids", "w") as handle:
            handle.write(f"{os.getpid()} {child.pid}")
        time.sleep(300)
        """,
    )
    config_with(tmp_path, "  - command: [hang.py]\n    on: [success]\n    timeout: 1\n")

    result, took = timed_lynx("start", "-ni", cwd=tmp_path)

    assert result.returncode == 0
    assert took < 1 + 5, took
    assert "Could not notify command (hang.py): still running after 1 s; ended it." in result.stdout
    # The hook and the child it started are gone.
    for pid in map(int, (tmp_path / "pids").read_text().split()):
        wait_for(lambda pid=pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", timeout=10)


# --- interruptions and schedulers ---------------------------------------------------------------


def start_lynx(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*lynx_command(), *args], cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_sends_interrupted_before_lynx_exits(tmp_path: Path, signum: int, code: int) -> None:
    write_script(tmp_path, "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    with receiver() as server:
        config_with(tmp_path, f"  - webhook: {server.url}/hook/x\n    on: [interrupted]\n",
                    steps="  - script: slow.py\n")  # fmt: skip
        lynx = start_lynx(tmp_path, "start", "-ni")
        try:
            wait_for(lambda: any(p.cmdline()[-1:] == ["slow.py"] for p in psutil.Process(lynx.pid).children()))
            lynx.send_signal(signum)
            out, err = lynx.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lynx.pid, signal.SIGKILL)
        # Sent before Lynx exited: nothing arrives later.
        events = [request.json() for request in server.requests]

    assert lynx.returncode == code, out + err
    assert [event["event"] for event in events] == ["interrupted"]
    assert events[0]["result"] == "interrupted"
    assert events[0]["text"].startswith("config was interrupted at step 1 (slow.py) after ")


def test_a_second_ctrl_c_while_waiting_for_notifications_ends_the_wait_and_keeps_the_history(tmp_path: Path) -> None:
    write_script(tmp_path, "slow.py", "import time\ntime.sleep(60)\n")
    with receiver(hang=True) as server:
        config_with(tmp_path, f"  - webhook: {server.url}/hook/x\n    on: [interrupted]\n    timeout: 60\n",
                    steps="  - script: slow.py\n")  # fmt: skip
        lynx = start_lynx(tmp_path, "start", "-ni")
        try:
            wait_for(lambda: any(p.cmdline()[-1:] == ["slow.py"] for p in psutil.Process(lynx.pid).children()))
            lynx.send_signal(signal.SIGINT)
            wait_for(lambda: server.requests)  # the interrupted event is being sent; the server never answers
            began = time.monotonic()
            lynx.send_signal(signal.SIGINT)
            out, err = lynx.communicate(timeout=30)
            took = time.monotonic() - began
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lynx.pid, signal.SIGKILL)

    assert lynx.returncode == 130, out + err
    assert took < 10
    assert "Stopped waiting for 1 notification(s) (Ctrl+C)." in out
    assert "Traceback" not in err
    assert [run["result"] for run in history(tmp_path)] == ["interrupted"]


def test_a_background_scheduler_notifies_once_per_failed_run(lynx_dir: Path) -> None:
    with receiver() as server:
        config_with(
            lynx_dir,
            f"  - webhook: {server.url}/hook/x\n",
            steps="  - script: fail.py\n",
            extra="cron:\n  second: '*/2'\n",
        )
        started = run_lynx("start", "-bg", "-kr", "-lf", "lynx.log", cwd=lynx_dir)
        assert started.returncode == 0, started.stderr
        wait_for(lambda: len([run for run in history(lynx_dir) if run["result"] == "failed"]) >= 3, timeout=60)
        stopped = run_lynx("stop", "-y", cwd=lynx_dir)
        assert stopped.returncode == 0, stopped.stderr
        failed = [run["run_id"] for run in history(lynx_dir) if run["result"] == "failed"]
        # Each failed run's event has arrived (a scheduler sends them while it waits for the next fire).
        wait_for(lambda: len(server.requests) >= len(failed), timeout=20)
        events = [request.json() for request in server.requests]

    assert sorted(event["run_id"] for event in events) == sorted(failed)
    assert all(event["event"] == "failure" and event["name"] == "config" for event in events)
    assert "Could not notify" not in (lynx_dir / "lynx.log").read_text()


# --- secrets --------------------------------------------------------------------------------------


def test_secrets_appear_nowhere_lynx_writes_or_shows(lynx_dir: Path) -> None:
    secrets = {
        "HOOK": "T0KEN-hook-7f3a9",
        "TOKEN": "bearer-8c1d2e",
        "HC": "6e1f0c8a-hc-uuid",
        "SMTP_PW": "pw-4b5c6d",
    }
    with receiver(statuses=[500] * 100) as server, smtp_server(auth=("smtp-user-91", secrets["SMTP_PW"])) as box:
        config_with(
            lynx_dir,
            f"  - webhook: {server.url}/hook/${{oc.env:HOOK}}\n"
            "    headers: {Authorization: 'Bearer ${oc.env:TOKEN}'}\n"
            f"  - healthchecks: {server.url}/ping/${{oc.env:HC}}\n"
            f"  - email: {{to: me@lab.org, host: 127.0.0.1, port: {box.port}, user: smtp-user-91, password_env: PW2}}\n"
            f"  - apprise: json://{server.url.split('://')[1]}/apprise/${{oc.env:HOOK}}\n",
            steps="  - script: fail.py\n",
            extra="cron:\n  minute: 0\n  hour: 4\n  run_on_start: true\n",
        )
        env = clean_env(**secrets, PW2="wrong-pw-0a9b")
        shown = []
        once = run_lynx("start", "-ni", "-lf", "once.log", cwd=lynx_dir, env=env)
        # -ni with a cron section schedules: run_on_start ran once and failed, which ended the schedule.
        assert once.returncode == 1, once.stdout + once.stderr
        shown += [once.stdout, once.stderr]
        background = run_lynx("start", "-bg", "-kr", "-lf", "bg.log", cwd=lynx_dir, env=env)
        assert background.returncode == 0, background.stderr
        wait_for(lambda: len(history(lynx_dir)) >= 2, timeout=60)
        wait_for(lambda: "Could not notify email" in (lynx_dir / "bg.log").read_text(), timeout=30)
        for command in (["status"], ["status", "--json"], ["logs"], ["history"], ["history", "--json"], ["validate"]):
            result = run_lynx(*command, cwd=lynx_dir, env=env)
            shown += [result.stdout, result.stderr]
        test = run_lynx("notify", "--test", cwd=lynx_dir, env=env)
        assert test.returncode == 1
        shown += [test.stdout, test.stderr]
        run_lynx("stop", "-y", cwd=lynx_dir)

    shown += [(lynx_dir / name).read_text() for name in ("once.log", "bg.log")]
    shown += [path.read_text() for path in (lynx_dir / ".lynx").rglob("*") if path.is_file()]
    shown += [(lynx_dir / ".lynx_pid.json").read_text()] if (lynx_dir / ".lynx_pid.json").exists() else []
    everything = "\n".join(shown)
    assert "Could not notify webhook" in everything and "Notify:" in everything  # the places were looked at
    for secret in [*secrets.values(), "wrong-pw-0a9b", "smtp-user-91"]:
        assert secret not in everything, secret


# --- the config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notify", "error"),
    [
        (
            "  - webhook: http://h/x\n    onn: [failure]\n",
            "notify item 1 (webhook): unknown key 'onn' (did you mean 'on'?)",
        ),
        (
            "  - webhook: http://h/x\n    on: [failed]\n",
            "notify item 1 (webhook): 'on': 'failed' is not an event "
            "(the events are: start, success, failure, interrupted)",
        ),
        (
            "  - webhook: http://h/x\n    email: {to: a@b, host: h}\n",
            "notify item 1: has both 'webhook' and 'email': each item is one channel; make two items",
        ),
        ("  - on: [failure]\n", "notify item 1: give one of command, webhook, email, healthchecks, apprise"),
        (
            "  - webhook: ftp://h/secret\n",
            "notify item 1 (webhook): 'webhook' must be an http:// or https:// URL with a host, not something else",
        ),
        (
            "  - healthchecks: https://hc-ping.com/x\n    on: [failure]\n",
            "notify item 1 (healthchecks): 'on' does not apply: a Healthchecks check is pinged at every start and end, "
            "which is how it measures runs and notices one that never ended",
        ),
        ("  - email: {to: a@b.org}\n", "notify item 1 (email): email: 'host' is missing: give the SMTP server's name"),
        (
            "  - email: {to: a@b.org, host: h, start_tls: true}\n",
            "notify item 1 (email): email: unknown key 'start_tls' (did you mean 'starttls'?)",
        ),
        ("  - command: [alert.py]\n    headers: {A: b}\n", "notify item 1 (command): 'headers' is for a webhook only"),
        ("  - command: [no-such-hook.py]\n", "notify item 1 (command): script not found"),
        (
            "  - webhook: http://h/x\n    timeout: 0\n",
            "notify item 1 (webhook): 'timeout' must be a number of seconds more than 0 and at most 1e+09, not 0",
        ),
        (
            "  - webhook: http://h/x\n    log_tail: -1\n",
            "notify item 1 (webhook): 'log_tail' must be a number of bytes from 0 to 1048576, not -1",
        ),
        (
            "  webhook: http://h/x\n",
            "'notify' must be a list of channels, each with one of command, webhook, email, "
            "healthchecks, apprise; not a mapping",
        ),
    ],
)
def test_bad_notify_keys_are_one_error_line_exit_2_and_nothing_runs(tmp_path: Path, notify: str, error: str) -> None:
    write_script(tmp_path, "alert.py", "print('alert')\n")
    config_with(tmp_path, notify)

    for command in (["start", "-ni"], ["validate"], ["notify", "--test"]):
        result = run_lynx(*command, cwd=tmp_path)

        assert result.returncode == 2, (command, result.stdout + result.stderr)
        assert result.stderr.startswith(f"Error: conf/config.yaml: {error}"), result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert "secret" not in result.stderr
    assert ran(tmp_path) == []


def test_a_bare_on_key_stays_the_word_on_while_values_keep_their_yaml_meaning(tmp_path: Path) -> None:
    with receiver() as server:
        config_with(
            tmp_path,
            f"  - webhook: {server.url}/hook/x\n    on: [success]\n",
            # 'on' as a value is still YAML 1.1's true.
            steps="  - script: fail.py\n    continue_on_error: on\n  - script: ok.py\n",
        )
        assert run_lynx("start", "-ni", cwd=tmp_path).returncode == 1

        assert server.requests == []  # the run failed: no success event
    assert ran(tmp_path) == ["fail.py", "ok.py"]  # continue_on_error: on went on


def test_validate_lists_the_channels_and_their_events_masked(tmp_path: Path) -> None:
    write_script(tmp_path, "alert.py", "print('alert')\n")
    config_with(
        tmp_path,
        "  - command: [alert.py, --token, abc123]\n    on: [failure, interrupted]\n"
        "  - webhook: https://user:pw@hooks.example.com:8443/services/T0/B1/XYZ?x=1\n    on: [success, start]\n"
        "  - healthchecks: https://hc-ping.com/0b7e2d6a-4c5f\n"
        "  - email: {to: me@lab.org, host: smtp.lab.org, port: 587, starttls: true}\n"
        "  - apprise: [tgram://123:ABC/456, ntfy://topic]\n",
    )

    result = run_lynx("validate", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(
        "\nNotify:\n"
        "  1. command (alert.py) on failure, interrupted\n"
        "  2. webhook (https://hooks.example.com:8443/…) on start, success\n"
        "  3. healthchecks (https://hc-ping.com/…) on start, success, failure, interrupted\n"
        "  4. email (me@lab.org via smtp.lab.org:587) on failure\n"
        "  5. apprise (tgram://…, ntfy://…) on failure\n"
    )
    for secret in ("abc123", "user:pw", "T0/B1", "0b7e2d6a", "123:ABC", "topic"):
        assert secret not in result.stdout


# --- lynx notify --test ---------------------------------------------------------------------------


def test_notify_test_sends_one_test_event_per_channel_and_says_how_each_went(tmp_path: Path) -> None:
    write_script(tmp_path, "alert.py", "import os\nprint('test hook', os.environ['LYNX_EVENT'])\n")
    port = closed_port()
    with receiver() as server, smtp_server() as box:
        config_with(
            tmp_path,
            f"  - webhook: {server.url}/hook/x\n"
            f"  - healthchecks: {server.url}/ping/c\n"
            f"  - email: {{to: me@lab.org, host: 127.0.0.1, port: {box.port}}}\n"
            "  - command: [alert.py]\n",
        )
        result = run_lynx("notify", "--test", cwd=tmp_path)

        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(request.path.split("?")[0] for request in server.requests) == ["/hook/x", "/ping/c/log"]
        hook = next(request for request in server.requests if request.path == "/hook/x")
        assert hook.json()["event"] == "test" and hook.json()["text"].startswith("Test notification from Lynx")
        assert box.messages[0][2]["Subject"] == "[lynx] config: test notification"
        config_with(tmp_path, f"  - webhook: {server.url}/hook/y\n  - webhook: http://127.0.0.1:{port}/z\n")
        failing = run_lynx("notify", "--test", cwd=tmp_path)

    lines = result.stdout.splitlines()
    assert "command (alert.py): test hook test" in lines
    assert lines[-4:] == [
        f"webhook ({server.url}/…): ok",
        f"healthchecks ({server.url}/…): ok",
        f"email (me@lab.org via 127.0.0.1:{box.port}): ok",
        "command (alert.py): ok",
    ]
    assert failing.returncode == 1
    assert failing.stdout.splitlines() == [
        f"webhook ({server.url}/…): ok",
        f"webhook (http://127.0.0.1:{port}/…): connection refused after 3 tries",
    ]
    assert ran(tmp_path) == []  # a test runs no step


def test_notify_without_test_or_without_channels_says_so(tmp_path: Path) -> None:
    marker_step(tmp_path, "ok.py")
    write_config(tmp_path, "steps:\n  - script: ok.py\n")

    assert run_lynx("notify", "-cf", "config.yaml", cwd=tmp_path).returncode == 2
    result = run_lynx("notify", "--test", "-cf", "config.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "Error: config.yaml has no 'notify' channels to test\n"


# --- cost -----------------------------------------------------------------------------------------


def test_a_config_without_notify_imports_nothing_of_notifications(tmp_path: Path) -> None:
    marker_step(tmp_path, "ok.py")
    write_config(tmp_path, "steps:\n  - script: ok.py\n")

    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lynx", "start", "-ni", "-cf", "config.yaml"],
        cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    for module in ("lynx.notify", "lynx.config.notify", "urllib.request", "http.client", "smtplib", "email", "ssl",
                   "json"):  # fmt: skip
        assert module not in imported, module


def test_a_proxy_in_the_environment_carries_the_webhook(tmp_path: Path) -> None:
    # The receiver plays the proxy: it gets the request for the real URL, as a proxy does.
    port = closed_port()
    with receiver() as proxy:
        config_with(tmp_path, f"  - webhook: http://127.0.0.1:{port}/hook/x\n    on: [success]\n")
        result = run_lynx("start", "-ni", cwd=tmp_path, env=clean_env(http_proxy=proxy.url))

        assert result.returncode == 0
        assert [request.path for request in proxy.requests] == [f"http://127.0.0.1:{port}/hook/x"]
    assert "Could not notify" not in result.stdout


def test_a_failed_slurm_step_notifies_like_a_local_one(tmp_path: Path) -> None:
    from test_slurm import HOW_TO_RUN, _cluster_answers, jobs_of

    if not _cluster_answers():
        if os.environ.get("LYNX_REQUIRE_SLURM") == "1":
            pytest.fail(f"LYNX_REQUIRE_SLURM=1 but {HOW_TO_RUN}")
        pytest.skip(HOW_TO_RUN)
    name = f"n{uuid.uuid4().hex[:10]}"
    write_script(tmp_path, "train.py", "import sys\nprint('on the cluster')\nsys.exit(3)\n")
    try:
        with receiver() as server:
            write_config(
                tmp_path,
                f"notify:\n  - webhook: {server.url}/hook/x\nsteps:\n  - script: train.py\n    slurm: {{}}\n",
                name=f"{name}.yaml",
            )
            result = run_lynx("start", "-ni", "-cf", f"{name}.yaml", cwd=tmp_path, timeout=120)

            assert result.returncode == 1, result.stdout + result.stderr
            (request,) = server.requests
    finally:
        for job_id in jobs_of(name):
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    event = request.json()
    assert event["event"] == "failure" and event["failed_step"] == 1
    assert event["steps"][0]["job_id"] == history(tmp_path)[0]["steps"][0]["job_id"]
    assert "on the cluster" in event["log_tail"]


def test_the_notifier_reads_records_never_the_parser_and_nothing_below_imports_it() -> None:
    """lynx.notify depends on the records and the history's record builder; the runner and history never on it."""
    import ast

    import lynx

    package = Path(lynx.__file__).parent

    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        return found | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}

    for path in sorted((package / "notify").glob("*.py")):
        assert not any(name.startswith(("lynx.config", "lynx.commands", "lynx.cli")) for name in imports(path)), path
    for module in ("records.py", "runner.py", "history.py", "launch.py", "process.py", "logs.py", "state.py"):
        assert not any(name.startswith("lynx.notify") for name in imports(package / module)), module


def test_a_hook_that_runs_beside_a_step_is_not_taken_for_its_orphan(tmp_path: Path) -> None:
    """A start hook runs while step 1 does; the step's timeout ends the step's tree, never the hook (a child
    of Lynx's own, started after the step), whose exit code (3) still comes through."""
    write_script(
        tmp_path,
        "slow_alert.py",
        """
        import sys, time
        time.sleep(2.5)
        open("hook-finished", "w").close()
        sys.exit(3)
        """,
    )
    write_script(tmp_path, "stuck.py", "import time\ntime.sleep(30)\n")
    config_with(
        tmp_path, "  - command: slow_alert.py\n    on: [start]\n", steps="  - script: stuck.py\n    timeout: 1\n"
    )

    result = run_lynx("start", "-ni", cwd=tmp_path)

    assert result.returncode == 1
    assert "Step 1 (stuck.py) timed out after 1 s and was ended." in result.stdout
    assert (tmp_path / "hook-finished").exists()
    assert "Could not notify command (slow_alert.py): exit code 3." in result.stdout
