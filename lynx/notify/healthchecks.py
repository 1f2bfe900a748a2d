"""The ``healthchecks`` channel: Healthchecks.io's ping protocol, as runitor speaks it.

``<url>/start`` when a run starts, ``<url>`` when it succeeds, ``<url>/<exit code>`` (or ``/fail``)
when it fails or is interrupted, each with ``?rid=<uuid>`` so the service pairs a start with its end;
an end carries the log tail as its body. A test event goes to ``<url>/log``, which changes no check's state.
"""

from __future__ import annotations

import uuid

from lynx.channels import Channel
from lynx.notify.delivery import Context
from lynx.notify.event import Event
from lynx.notify.posting import post

# Run ids become UUIDs under this namespace (the protocol's rid must be a UUID).
RUN_NAMESPACE = uuid.UUID("2f9d1b2e-5c3a-4e8f-9a41-6c1f0d7b3e55")


def run_uuid(run_id: str) -> str:
    """The same UUID for the same run, whichever event and process asks."""
    return str(uuid.uuid5(RUN_NAMESPACE, run_id))


def ping_url(url: str, event: Event) -> str:
    if event.kind == "start":
        suffix = "/start"
    elif event.kind == "success":
        suffix = ""
    elif event.kind == "test":
        suffix = "/log"
    else:
        suffix = f"/{event.exit_code}" if event.exit_code is not None else "/fail"
    separator = "&" if "?" in url else "?"
    return f"{url}{suffix}{separator}rid={run_uuid(event.run_id)}"


def send(channel: Channel, event: Event, context: Context) -> None:
    assert channel.url is not None
    # As runitor: the end of the output (the service shows it with the ping); a test says what it is.
    text = "" if event.kind == "start" else event.log_tail(channel.log_tail) or event.text
    body = text.encode("utf-8")
    post(ping_url(channel.url, event), body, {"Content-Type": "text/plain; charset=utf-8"}, channel.timeout)
