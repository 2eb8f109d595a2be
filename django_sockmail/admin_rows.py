"""What the audit log's pages show of a record: a status as the admin's icon, what
became of a recipient, and the rows of the session page (its messages with their
first recipients, its transcript lines) for ``session/change_form.html``.

Everything the server said reaches the page only through auto-escaping templates and
``format_html``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.templatetags.static import static
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .models import Message, Recipient, Session, TranscriptLine
from .transcript_text import PREFIXES

__all__ = [
    "LineRow",
    "MessageRow",
    "RecipientRow",
    "first_recipients",
    "line_row",
    "message_row",
    "recipient_outcome",
    "status_icon",
]

_STATUS_ICONS: dict[str, str] = {
    Session.Status.OK: "yes",
    Session.Status.FAILED: "no",
    Session.Status.TIMED_OUT: "no",
    Message.Status.SENT: "yes",
    Message.Status.PARTIAL: "alert",
    Message.Status.DEFERRED: "alert",
    Message.Status.FAILED: "no",
    Message.Status.NOT_SENT: "unknown",
    Message.Status.UNKNOWN: "alert",
}

# A transcript line's CSS class suffix, by who said it.
_LINE_KINDS: dict[str, str] = {
    TranscriptLine.Direction.CLIENT: "client",
    TranscriptLine.Direction.SERVER: "server",
    TranscriptLine.Direction.CONTENT: "content",
    TranscriptLine.Direction.INFO: "info",
}


def status_icon(value: str, label: str) -> SafeString:
    """The admin's yes/no/alert icon followed by the status label."""
    icon = _STATUS_ICONS.get(value, "unknown")
    return format_html(
        '<img src="{}" alt="{}" class="sockmail-status-icon"> {}',
        static(f"admin/img/icon-{icon}.svg"),
        value,
        label,
    )


def recipient_outcome(recipient: Recipient) -> SafeString:
    """The admin's icon and a word for what became of a recipient."""
    if recipient.reply_code is None:
        icon, outcome = "unknown", "not offered"
    elif recipient.accepted:
        icon, outcome = "yes", "accepted"
    else:
        icon, outcome = "no", "refused"
    return format_html(
        '<img src="{}" alt="" class="sockmail-status-icon"> {}',
        static(f"admin/img/icon-{icon}.svg"),
        outcome,
    )


@dataclass(frozen=True)
class RecipientRow:
    recipient: Recipient
    outcome: SafeString


@dataclass(frozen=True)
class MessageRow:
    message: Message
    url: str
    status: SafeString
    recipients: list[RecipientRow]  # the first of them: see first_recipients()
    recipients_hidden: int
    recipients_url: str  # all of them, in the recipient list


@dataclass(frozen=True)
class LineRow:
    line: TranscriptLine
    kind: str  # CSS class suffix: client, server, server-error, content, info
    prefix: str


def line_row(line: TranscriptLine) -> LineRow:
    """A transcript line with its CSS class and prefix; a 4xx or 5xx reply stands out."""
    kind = _LINE_KINDS.get(line.direction, "info")
    if kind == "server" and line.text[:1] in ("4", "5"):
        kind = "server-error"
    return LineRow(line, kind, PREFIXES.get(line.direction, line.direction))


def message_row(
    message: Message, recipients: list[Recipient], url: str, recipients_url: str
) -> MessageRow:
    """A message of the session page, with the first of its ``recipients`` shown and the
    rest counted; ``url`` is the message's page, ``recipients_url`` all its recipients."""
    return MessageRow(
        message=message,
        url=url,
        status=status_icon(message.status, message.get_status_display()),
        recipients=[RecipientRow(r, recipient_outcome(r)) for r in recipients],
        recipients_hidden=max(message.recipient_count - len(recipients), 0),
        recipients_url=recipients_url,
    )


def first_recipients(
    session: Session, messages: list[Message], limit: int
) -> dict[int, list[Recipient]]:
    """The first ``limit`` recipients of ``messages`` (a session's first, in order), in
    message and RCPT order, by message id: one query however many there are."""
    if not messages:
        return {}
    recipients = (
        Recipient.objects.using(session._state.db)
        .filter(message__session=session, message__position__lte=messages[-1].position)
        .order_by("message__position", "id")[:limit]
    )
    by_message: dict[int, list[Recipient]] = defaultdict(list)
    for recipient in recipients:
        by_message[recipient.message_id].append(recipient)
    return by_message
