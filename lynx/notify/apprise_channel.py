"""The ``apprise`` channel: the 100+ services the Apprise library speaks (an optional extra).

Named so as not to stand for the library itself. What Apprise logs is captured, never shown as it
is: it may quote a URL's token; the reason a delivery failed is taken from it, with secrets removed.
"""

from __future__ import annotations

import logging

import apprise

from lynx.channels import Channel, masked_url
from lynx.notify.delivery import Context, NotifyError
from lynx.notify.event import Event


def send(channel: Channel, event: Event, context: Context) -> None:
    notifier = apprise.Apprise()
    for url in channel.apprise:
        if not notifier.add(url):
            raise NotifyError(f"Apprise does not understand the URL {masked_url(url, host=False)}")
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as said:
        delivered = notifier.notify(title=event.subject, body=event.body(channel.log_tail))
    if not delivered:
        lines = [line.strip() for line in said.getvalue().splitlines() if line.strip()]
        raise NotifyError(f"Apprise could not deliver it{': ' + lines[-1] if lines else ''}")
