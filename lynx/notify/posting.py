"""An HTTP POST that retries a connection error or a 5xx answer twice, all within a timeout (webhooks, pings).

A plain ``http(s)://host[:port]/path`` URL is posted over a socket of its own: urllib loads
http.client and the email package, which would cost a one-shot run more than the whole delivery.
Anything else (a proxy in the environment, a user in the URL, a name that is not ASCII) goes
through urllib, which knows all of that.
"""

from __future__ import annotations

import os
import re
import socket
import time

from lynx import __version__
from lynx.notify.delivery import BACKOFF, NotifyError

_PLAIN = re.compile(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?([/?][^#]*)?(?:#.*)?")
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
# The status line of an answer is far shorter; more without one is not HTTP.
MAX_STATUS_LINE = 8192


class _AttemptError(Exception):
    def __init__(self, reason: str, again: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.again = again


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    """POST ``body`` to ``url``; return once the server answered 2xx (or 3xx).

    Raises:
        NotifyError: the reason, with the number of tries when there were several
            (``HTTP 500 after 3 tries``, ``connection refused``, ``no answer within 10 s``).
    """
    deadline = time.monotonic() + timeout
    headers = {"User-Agent": f"lynx/{__version__}", **headers}
    plain = _PLAIN.fullmatch(url) if url.isascii() and not any(os.environ.get(name) for name in _PROXIES) else None
    tries = 0
    while True:
        tries += 1
        left = max(deadline - time.monotonic(), 0.001)
        try:
            status = _direct(plain, body, headers, left) if plain else _via_urllib(url, body, headers, left)
            if status < 400:
                return
            reason, again = f"HTTP {status}", status >= 500
        except (TimeoutError, socket.timeout):
            raise NotifyError(_tried(f"no answer within {timeout:g} s", tries)) from None
        except _AttemptError as failed:
            reason, again = failed.reason, failed.again
        except OSError as error:  # refused, reset, unreachable, not resolved
            reason, again = _connection_reason(error), True
        delay = BACKOFF[tries - 1] if tries <= len(BACKOFF) else None
        if not again or delay is None or time.monotonic() + delay >= deadline:
            raise NotifyError(_tried(reason, tries))
        time.sleep(delay)


def _direct(url: re.Match[str], body: bytes, headers: dict[str, str], timeout: float) -> int:
    """One POST over a socket of its own (``Connection: close``); the answer's status code."""
    scheme, host, port, path = url.group(1), url.group(2), url.group(3), url.group(4) or "/"
    secure = scheme == "https"
    address = host.strip("[]")
    authority = host if port is None else f"{host}:{port}"
    lines = [f"POST {path if path.startswith('/') else '/' + path} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    try:
        head = "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise _AttemptError("a header holds text that HTTP cannot carry (not Latin-1)", again=False) from None
    sock = socket.create_connection((address, int(port or (443 if secure else 80))), timeout=timeout)
    try:
        if secure:
            import ssl

            try:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=address)
            except ssl.SSLError as error:
                raise _AttemptError(f"TLS: {error.reason or error}", again=False) from None
        sock.sendall(head + body)
        return _status(sock)
    finally:
        sock.close()


def _status(sock: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise _AttemptError("the connection was closed before an answer", again=True)
        answer += chunk
        if len(answer) > MAX_STATUS_LINE:
            break
    match = re.match(rb"HTTP/[0-9.]+ ([0-9]{3})", answer)
    if match is None:
        raise _AttemptError("the answer is not HTTP", again=False)
    return int(match.group(1))


def _via_urllib(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)
    except urllib.error.URLError as error:
        if isinstance(error.reason, OSError):
            raise error.reason from None
        raise _AttemptError(str(error.reason), again=True) from None


def _tried(reason: str, tries: int) -> str:
    return f"{reason} after {tries} tries" if tries > 1 else reason


def _connection_reason(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "the connection was closed before an answer"
    if isinstance(error, socket.gaierror):
        return f"the host name cannot be resolved ({error.strerror or error})"
    return error.strerror or str(error) or type(error).__name__
