"""Notifications: tell hook commands, webhooks, e-mail, Healthchecks and Apprise how runs go.

``notifier`` is the run reporter (handed to the runner like the history), ``event`` says what an
event says once, ``tail`` keeps the end of a run's output, and each channel is a small module of
its own (``command``, ``webhook``, ``mail``, ``healthchecks``, ``apprise_channel``) with
``posting`` for the HTTP that webhooks and pings share. Only a config with ``notify`` imports it.
"""
