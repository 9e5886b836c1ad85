"""The three notifiers: a JSON webhook, a Slack-compatible webhook and email over SMTP.

Each either delivers or raises :class:`DeliveryFailed` with one sentence; none retries by itself
(the dispatcher does, on its next round) and none logs secrets (URLs are shown without query).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import parseaddr
from urllib.parse import urlsplit

import httpx

from pgdr.notify.config import Channel, SmtpConfig
from pgdr.notify.message import Message


class DeliveryFailed(Exception):
    """A notification that did not arrive; the message is one sentence."""


def safe_url(url: str) -> str:
    """The URL without credentials or query (webhook URLs often carry a secret there)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def post_json(url: str, body: dict[str, object], timeout: float) -> None:
    try:
        response = httpx.post(url, json=body, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise DeliveryFailed(f"{safe_url(url)} did not answer within {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{safe_url(url)} cannot be reached: {exc}") from exc
    if response.status_code >= 300:
        raise DeliveryFailed(f"{safe_url(url)} answered HTTP {response.status_code}")


def send_email(smtp: SmtpConfig, address: str, message: Message, timeout: float) -> None:
    _name, parsed = parseaddr(address)
    if "@" not in parsed or parsed != address.strip():
        raise DeliveryFailed(f"{address!r} is not an email address")
    email = EmailMessage()
    email["From"] = smtp.sender
    email["To"] = address
    email["Subject"] = message.subject
    email.set_content(message.text)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.username and smtp.password:
                client.login(smtp.username, smtp.password)
            client.send_message(email)
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryFailed(f"the SMTP server {smtp.host}:{smtp.port} refused {address}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(
            f"the SMTP server {smtp.host}:{smtp.port} did not take the mail: {exc}"
        ) from exc


def deliver(channel: Channel, message: Message, smtp: SmtpConfig, timeout: float) -> None:
    """Send ``message`` through ``channel``; raises DeliveryFailed."""
    if channel.kind == "webhook":
        post_json(channel.target, message.payload, timeout)
    elif channel.kind == "slack":
        post_json(channel.target, {"text": message.text}, timeout)
    else:
        send_email(smtp, channel.target, message, timeout)
