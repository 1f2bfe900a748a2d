"""An HTTP POST that retries a connection error or a 5xx answer twice, all within a timeout (webhooks, pings)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from lynx import __version__
from lynx.notify.delivery import BACKOFF, NotifyError


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    """POST ``body`` to ``url``; return once the server answered 2xx (or 3xx).

    Raises:
        NotifyError: the reason, with the number of tries when there were several
            (``HTTP 500 after 3 tries``, ``connection refused``, ``no answer within 10 s``).
    """
    deadline = time.monotonic() + timeout
    headers = {"User-Agent": f"lynx/{__version__}", **headers}
    tries = 0
    while True:
        tries += 1
        left = deadline - time.monotonic()
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=max(left, 0.001)) as response:
                response.read(65536)
            return
        except urllib.error.HTTPError as error:
            reason, again = f"HTTP {error.code}", error.code >= 500
            error.close()
        except (TimeoutError, socket.timeout):
            raise NotifyError(_tried(f"no answer within {timeout:g} s", tries)) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (TimeoutError, socket.timeout)):
                raise NotifyError(_tried(f"no answer within {timeout:g} s", tries)) from None
            reason, again = _connection_reason(error.reason), True
        except OSError as error:  # the connection reset or closed before an answer
            reason, again = _connection_reason(error), True
        delay = BACKOFF[tries - 1] if tries <= len(BACKOFF) else None
        if not again or delay is None or time.monotonic() + delay >= deadline:
            raise NotifyError(_tried(reason, tries))
        time.sleep(delay)


def _tried(reason: str, tries: int) -> str:
    return f"{reason} after {tries} tries" if tries > 1 else reason


def _connection_reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError)):
        return "the connection was closed before an answer"
    if isinstance(reason, socket.gaierror):
        return f"the host name cannot be resolved ({reason.strerror or reason})"
    if isinstance(reason, OSError):
        return reason.strerror or type(reason).__name__
    return str(reason) or type(reason).__name__
