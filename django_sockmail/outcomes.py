"""What ``send_messages()`` leaves on each message: the server's verdict on it, read
with :func:`outcome_of`."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, overload

from .smtp.results import MessageOutcome

if TYPE_CHECKING:
    from django.core.mail import EmailMessage

T = TypeVar("T")

# The attribute the outcome is kept in. Reading it directly (``message.sockmail_outcome``)
# keeps working; outcome_of() is its typed form.
ATTRIBUTE = "sockmail_outcome"

_NO_DEFAULT = object()


@overload
def outcome_of(message: EmailMessage) -> MessageOutcome: ...
@overload
def outcome_of(message: EmailMessage, default: T) -> MessageOutcome | T: ...
def outcome_of(message: EmailMessage, default: object = _NO_DEFAULT) -> object:
    """The :class:`~django_sockmail.smtp.results.MessageOutcome` that django_sockmail's
    backend left on ``message``: its status, each recipient's reply, the queue id.

    Every message with recipients handed to ``send_messages()`` has one, whether it was
    sent, refused or never offered. For any other message, ``default`` when given (as
    with ``getattr``: ``outcome_of(message, None)``), else LookupError.
    """
    outcome = getattr(message, ATTRIBUTE, None)
    if isinstance(outcome, MessageOutcome):
        return outcome
    if default is not _NO_DEFAULT:
        return default
    raise LookupError(
        "This message has no django_sockmail outcome: it was not handed to "
        "django_sockmail's EmailBackend, or has no recipients."
    )


def attach_outcome(message: EmailMessage, outcome: MessageOutcome) -> None:
    """Leave ``outcome`` on ``message``, for :func:`outcome_of` (the backend's part)."""
    setattr(message, ATTRIBUTE, outcome)
