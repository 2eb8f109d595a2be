"""django_sockmail: send Django's mail over a hand-written SMTP client and keep the
transcript of every session.

Settings name the backend, ``django_sockmail.backend.EmailBackend`` (EMAIL_BACKEND, or a
MAILERS entry's BACKEND); what code imports is here, and importing it needs neither
settings nor the app registry:

- ``outcome_of`` — the server's verdict on a message the backend was given: its
  ``MessageOutcome`` (status, queue id, each recipient's ``RecipientOutcome``, the
  ``Reply`` that stopped it). The same object is ``message.sockmail_outcome``, which
  code written before ``outcome_of`` reads.
- ``MessageStatus`` and ``SessionStatus`` — the statuses a message and a session end
  with (``sent``, ``partial``, ``deferred``, ``failed``, ``not_sent``, ``unknown``;
  ``ok``, ``failed``, ``timeout``), strings that compare equal to the values the
  audit log stores.
- ``DSN`` — delivery status notification requests (RFC 3461), given to a message as
  ``message.sockmail_dsn``.
- ``message_sent``, ``message_failed``, ``session_recorded`` — the signals (see
  :mod:`django_sockmail.signals`).
- ``SMTPError`` and its subclasses, each also a subclass of the matching smtplib
  exception: ``SMTPConnectError``, ``SMTPServerDisconnected``, ``SMTPTimeoutError``,
  ``SMTPTLSError``, ``SMTPHeloError``, ``SMTPAuthenticationError``,
  ``SMTPNotSupportedError``, ``SMTPCommandError``, ``SMTPSenderRefused``,
  ``SMTPRecipientsRefused``, ``SMTPDataError``, ``SMTPProtocolError`` and
  ``SMTPOutOfStepError``.
"""

__version__ = "0.1.0"

from .outcomes import outcome_of
from .signals import message_failed, message_sent, session_recorded
from .smtp.envelope import DSN
from .smtp.errors import (
    SMTPAuthenticationError,
    SMTPCommandError,
    SMTPConnectError,
    SMTPDataError,
    SMTPError,
    SMTPHeloError,
    SMTPNotSupportedError,
    SMTPOutOfStepError,
    SMTPProtocolError,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from .smtp.reply import Reply
from .smtp.results import MessageOutcome, RecipientOutcome
from .smtp.status import MessageStatus, SessionStatus

__all__ = [
    "DSN",
    "MessageOutcome",
    "MessageStatus",
    "RecipientOutcome",
    "Reply",
    "SMTPAuthenticationError",
    "SMTPCommandError",
    "SMTPConnectError",
    "SMTPDataError",
    "SMTPError",
    "SMTPHeloError",
    "SMTPNotSupportedError",
    "SMTPOutOfStepError",
    "SMTPProtocolError",
    "SMTPRecipientsRefused",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPTLSError",
    "SMTPTimeoutError",
    "SessionStatus",
    "message_failed",
    "message_sent",
    "outcome_of",
    "session_recorded",
]
