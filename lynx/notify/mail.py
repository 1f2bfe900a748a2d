"""The ``email`` channel: one message through an SMTP server (plain, STARTTLS or SSL; with or without a login)."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from lynx.channels import Channel, Mail
from lynx.notify.delivery import Context, NotifyError
from lynx.notify.event import Event


def sender(mail: Mail) -> str:
    """The From address: ``from``, else the user when it is an address, else the local user at this host."""
    if mail.sender:
        return mail.sender
    if mail.user and "@" in mail.user:
        return mail.user
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "lynx"
    return f"{user}@{os.uname().nodename}"


def send(channel: Channel, event: Event, context: Context) -> None:
    mail = channel.mail
    assert mail is not None
    message = EmailMessage()
    message["Subject"] = event.subject
    message["From"] = sender(mail)
    message["To"] = ", ".join(mail.to)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=os.uname().nodename)
    message.set_content(event.body(channel.log_tail))
    password = context.environ.get(mail.password_env, "") if mail.password_env else None
    try:
        if mail.ssl:
            server: smtplib.SMTP = smtplib.SMTP_SSL(
                mail.host, mail.port, timeout=channel.timeout, context=ssl.create_default_context()
            )
        else:
            server = smtplib.SMTP(mail.host, mail.port, timeout=channel.timeout)
        with server:
            if mail.starttls:
                server.starttls(context=ssl.create_default_context())
            if mail.user is not None:
                server.login(mail.user, password or "")
            server.send_message(message)
    except smtplib.SMTPAuthenticationError as error:
        raise NotifyError(f"the server refused the login (SMTP {error.smtp_code})") from None
    except smtplib.SMTPNotSupportedError as error:
        raise NotifyError(f"the server does not support it: {error}") from None
    except smtplib.SMTPRecipientsRefused:
        raise NotifyError("the server refused the recipients") from None
    except smtplib.SMTPResponseException as error:
        said = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else error.smtp_error
        raise NotifyError(f"SMTP {error.smtp_code}: {said}") from None
    except (TimeoutError, socket.timeout):
        raise NotifyError(f"no answer within {channel.timeout:g} s") from None
    except ConnectionRefusedError:
        raise NotifyError("connection refused") from None
    except ssl.SSLError as error:
        raise NotifyError(f"TLS: {error.reason or error}") from None
    except (smtplib.SMTPException, OSError) as error:
        raise NotifyError(str(error) or type(error).__name__) from None
