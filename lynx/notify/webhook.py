"""The ``webhook`` channel: an HTTP POST of the event's JSON (Slack, Mattermost and Teams read its ``text``)."""

from __future__ import annotations

from lynx.channels import Channel
from lynx.notify.delivery import Context
from lynx.notify.event import Event
from lynx.notify.posting import post


def send(channel: Channel, event: Event, context: Context) -> None:
    assert channel.url is not None
    headers = {"Content-Type": "application/json", **dict(channel.headers)}
    post(channel.url, event.json(channel.log_tail), headers, channel.timeout)
