"""Exceptions. Each is a subclass of the matching :mod:`smtplib` class, so code written
for Django's SMTP backend (``except smtplib.SMTPException``) keeps working.

Response errors keep smtplib's attributes (``smtp_code``, ``smtp_error`` as bytes) and
add ``reply``, the parsed server reply, when there was one.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from typing import Any

# The errors carry replies and outcomes; neither imports the errors back.
from .reply import Reply
from .results import MessageOutcome


class SMTPError(smtplib.SMTPException):
    """Base of every django_sockmail error."""

    reply: Reply | None = None
    # Set when the error ended a mail transaction: what the server had said so far.
    outcome: MessageOutcome | None = None
    # Set by the Django backend when the error stopped a batch: which messages the
    # server accepted before it, and which it did not (so a retry sends no duplicate).
    sent_messages: Sequence[Any] = ()
    unsent_messages: Sequence[Any] = ()
    # ... and those whose content went out but whose verdict never came back.
    unknown_messages: Sequence[Any] = ()

    @property
    def is_transient(self) -> bool:
        """True when the server said try again later (a 4xx reply)."""
        return self.reply is not None and self.reply.is_transient


class _ReplyError(SMTPError, smtplib.SMTPResponseException):
    """An error about a server reply; ``smtp_code`` is -1 when there was none."""

    def __init__(self, reply: Reply | None, *args: object, message: str = "") -> None:
        code, text = (reply.code, reply.text) if reply is not None else (-1, message)
        smtplib.SMTPResponseException.__init__(self, code, text.encode())
        self.args = (code, text.encode(), *args)  # type: ignore[assignment]
        self.reply = reply
        self.message = message or str(reply)

    def __str__(self) -> str:
        return self.message


class SMTPProtocolError(SMTPError):
    """The server sent something that is not valid SMTP (malformed or oversized reply)."""


class SMTPOutOfStepError(SMTPProtocolError):
    """The server's replies no longer match the commands: a reply too many, or one
    that cannot answer the command it would be taken for. Every verdict since the
    replies last provably matched is in doubt."""


class SMTPServerDisconnected(SMTPError, smtplib.SMTPServerDisconnected):
    """The connection closed (or was never open) when a reply was expected."""


class SMTPTimeoutError(SMTPServerDisconnected, TimeoutError):
    """The server did not answer in time."""


class SMTPNotSupportedError(SMTPError, smtplib.SMTPNotSupportedError):
    """The message needs an extension the server does not offer (e.g. SMTPUTF8)."""


class SMTPTLSError(SMTPError, ssl.SSLError):
    """TLS could not be set up (handshake or certificate verification failed)."""

    def __str__(self) -> str:
        # ssl.SSLError would show a one-argument error as a tuple.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class SMTPConnectError(_ReplyError, smtplib.SMTPConnectError):
    """No session: the connection failed, or the server refused it in its greeting."""

    @classmethod
    def without_reply(cls, message: str) -> SMTPConnectError:
        return cls(None, message=message)


class SMTPHeloError(_ReplyError, smtplib.SMTPHeloError):
    """The server refused both EHLO and HELO."""


class SMTPAuthenticationError(_ReplyError, smtplib.SMTPAuthenticationError):
    """The server refused the credentials."""


class SMTPCommandError(_ReplyError):
    """The server refused a command outside a mail transaction (e.g. STARTTLS)."""


class SMTPSenderRefused(_ReplyError, smtplib.SMTPSenderRefused):
    """The server refused MAIL FROM."""

    def __init__(self, reply: Reply, sender: str) -> None:
        super().__init__(reply, sender)
        self.sender = sender


class SMTPDataError(_ReplyError, smtplib.SMTPDataError):
    """The server refused DATA or the message content."""


class SMTPRecipientsRefused(SMTPError, smtplib.SMTPRecipientsRefused):
    """The server refused every recipient of a message.

    ``recipients`` maps each address to ``(code, text as bytes)`` like smtplib;
    ``replies`` maps it to the parsed :class:`Reply`.
    """

    def __init__(self, replies: dict[str, Reply]) -> None:
        recipients = {addr: (r.code, r.text.encode()) for addr, r in replies.items()}
        smtplib.SMTPRecipientsRefused.__init__(self, recipients)
        self.replies = replies
        self.reply = next(iter(replies.values()), None)

    def __str__(self) -> str:
        return "; ".join(f"<{addr}>: {reply}" for addr, reply in self.replies.items())

    @property
    def is_transient(self) -> bool:
        return all(r.is_transient for r in self.replies.values())
