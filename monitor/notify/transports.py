"""The channels: `Email` (SMTP) and `Webhook` (Slack-compatible), each a `Transport`.

A transport lives for one delivery run. `notify(message)` sends one message or raises
`TransportError`, whose text is one line and says what failed; `permanent` says whether trying
again could help (a refused recipient, an HTTP 4xx) or not (a server that did not answer). A
transport whose server cannot be reached is not tried again in the same run: the rest of the
run's messages fail at once with the same error, and back off with it.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from typing import Protocol

from monitor.notify.messages import Message, email_message, webhook_text
from permafrost import __version__
from permafrost.config.settings import Settings

log = logging.getLogger("permafrost.monitor.notify")

SMTP_TIMEOUT = 10
WEBHOOK_TIMEOUT = 10


class TransportError(Exception):
    """A message not delivered; `permanent` when the same message would fail again."""

    def __init__(self, text: str, *, permanent: bool = False) -> None:
        super().__init__(text)
        self.permanent = permanent


class Transport(Protocol):
    name: str  # as recorded in notify_sent ("opened:email")

    def notify(self, message: Message) -> None: ...

    def close(self) -> None: ...


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Email:
    """One SMTP session for all the messages of a run, opened on the first one."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None
        self.down: str | None = None

    def notify(self, message: Message) -> None:
        if self.down is not None:
            raise TransportError(f"ConnectionError: {self.down}")
        email = email_message(message.alert, message.event, self.settings)
        m = self.settings.monitor
        try:
            if self.smtp is None:
                self.smtp = self._connect()
            refused = self.smtp.send_message(
                email, from_addr=m.smtp_from, to_addrs=list(m.alert_emails)
            )
        except (
            smtplib.SMTPRecipientsRefused,
            smtplib.SMTPDataError,
            smtplib.SMTPSenderRefused,
        ) as exc:
            raise TransportError(_said(exc), permanent=True) from exc  # the session carries on
        except (smtplib.SMTPException, OSError) as exc:
            self.down = _said(exc)
            self._drop()
            raise TransportError(self.down) from exc
        if refused:
            log.warning("alert email refused for %s", ", ".join(sorted(refused)))

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                self.smtp.close()
            self.smtp = None

    def _drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def _connect(self) -> smtplib.SMTP:
        m = self.settings.monitor
        assert m.smtp_host is not None
        smtp: smtplib.SMTP
        if m.smtp_tls == "ssl":
            context = ssl.create_default_context()
            smtp = smtplib.SMTP_SSL(m.smtp_host, m.smtp_port, timeout=SMTP_TIMEOUT, context=context)
        else:
            smtp = smtplib.SMTP(m.smtp_host, m.smtp_port, timeout=SMTP_TIMEOUT)
        try:
            smtp.ehlo()
            if m.smtp_tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if m.smtp_user and m.smtp_password:
                smtp.login(m.smtp_user, m.smtp_password.reveal())
        except BaseException:
            smtp.close()
            raise
        return smtp


class Webhook:
    """A Slack-compatible incoming webhook: POST {"text": ...} as JSON. An HTTP error answer is
    that message's; a server that cannot be reached is the run's."""

    name = "webhook"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.down: str | None = None

    def notify(self, message: Message) -> None:
        if self.down is not None:
            raise TransportError(f"ConnectionError: {self.down}")
        text = webhook_text(message.alert, message.event, self.settings)
        try:
            self._post(text)
        except urllib.error.HTTPError as exc:
            raise TransportError(_said(exc), permanent=_refused(exc.code)) from exc
        except OSError as exc:
            self.down = _said(exc)
            raise TransportError(self.down) from exc

    def close(self) -> None:
        return None

    def _post(self, text: str) -> None:
        assert self.settings.monitor.webhook_url is not None
        request = urllib.request.Request(
            self.settings.monitor.webhook_url.reveal(),
            data=json.dumps({"text": text}).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"permafrost/{__version__}"},
        )
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
            response.read()


def _refused(status: int) -> bool:
    """An HTTP answer that the same request would get again (not a timeout or a rate limit)."""
    return 400 <= status < 500 and status not in (408, 429)
